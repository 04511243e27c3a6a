"""MSE after k steps on held-out sinusoids, and the pretrained fine-tuning baseline: exact and
known values, the same tasks for every k, the torch.func fine-tune against a plain SGD loop."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalearn_ext.evaluate import FineTuned, fine_tune_predict, pretrain_baseline, regression_mse
from metalearn_ext.tasks import build_task
from metalearn_ext.tasks.regression import SinusoidTaskConfig

# y = A sin(x − φ), A ~ U[0.1, 5]: predicting 0 scores E[y²] = E[A²] / 2
ZERO_MSE = (5**3 - 0.1**3) / (3 * 4.9) / 2


@pytest.fixture(scope="module")
def sinusoid():
    return build_task(SinusoidTaskConfig())


def least_squares(support_x, support_y, query_x, steps):
    """A sin(x − φ) = a sin x + b cos x: an exact fit from the support points."""
    basis = lambda x: torch.cat([torch.sin(x), torch.cos(x)], -1).double()
    coef = torch.linalg.lstsq(basis(support_x), support_y.double()).solution
    return (basis(query_x) @ coef).float()


def mlp():
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def test_exact_and_zero_predictors(sinusoid):
    exact = regression_mse(least_squares, sinusoid, steps=(0,), tasks=200)
    assert exact["steps"] == [0] and exact["mean"][0] < 1e-8
    zero = regression_mse(lambda sx, sy, qx, steps: torch.zeros_like(qx), sinusoid, steps=(0,), tasks=500,
                          batch_size=128)
    assert abs(zero["mean"][0] - ZERO_MSE) < 3 * zero["half"][0] and zero["half"][0] < 0.5
    assert (zero["tasks"], zero["k_shot"], zero["n_query"]) == (500, 10, 100)


def test_every_step_count_sees_the_same_tasks_whatever_the_batch_size(sinusoid):
    calls = []

    def predict(sx, sy, qx, steps):
        calls.append((steps, qx))
        return torch.full_like(qx, float(steps))  # MSE grows with k: the counts must not be mixed up

    r = regression_mse(predict, sinusoid, steps=(0, 1, 10), tasks=30, batch_size=30, n_query=5)
    assert [k for k, _ in calls] == [0, 1, 10] and all(torch.equal(q, calls[0][1]) for _, q in calls)
    assert r["mean"][0] < r["mean"][1] < r["mean"][2] and len(r["half"]) == len(r["lo"]) == len(r["hi"]) == 3
    again = regression_mse(predict, sinusoid, steps=(0, 1, 10), tasks=30, batch_size=8, n_query=5)
    assert again == r
    with pytest.raises(ValueError, match=r"steps=0\) must return \(4, 5, 1\)"):
        regression_mse(lambda sx, sy, qx, steps: qx[:, :2], sinusoid, steps=(0,), tasks=4, n_query=5)
    with pytest.raises(ValueError, match="steps"):
        regression_mse(predict, sinusoid, steps=(-1,), tasks=4)


def test_fine_tune_is_plain_sgd_per_task_and_leaves_the_module_alone(sinusoid):
    torch.manual_seed(0)
    net = mlp()
    before = copy.deepcopy(net.state_dict())
    b = sinusoid.sample(range(3), seed=0, step=0, split="test")
    with torch.no_grad():  # the protocol's context: torch.func's grad ignores it
        got = fine_tune_predict(net, b.support_x, b.support_y, b.query_x, steps=3, lr=0.01)
    for e in range(3):
        ref = copy.deepcopy(net)  # the reference: a copy trained by torch.optim.SGD
        opt = torch.optim.SGD(ref.parameters(), lr=0.01)
        for _ in range(3):
            opt.zero_grad()
            F.mse_loss(ref(b.support_x[e]), b.support_y[e]).backward()
            opt.step()
        torch.testing.assert_close(got[e], ref(b.query_x[e]), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    torch.testing.assert_close(FineTuned(net)(b.support_x, b.support_y, b.query_x, steps=0), net(b.query_x))


def test_pretrained_baseline_learns_the_mean_function_and_fine_tuning_helps(sinusoid):
    # The best task-blind prediction is E[y | x] = −(2/π) E[A] cos x, MSE ≈ 2.93 (zero: 4.25).
    baseline = pretrain_baseline(mlp, sinusoid, iterations=300, lr=3e-3, seed=0)
    r = regression_mse(baseline, sinusoid, steps=(0, 10), tasks=300)
    assert r["mean"][0] < 3.6 < ZERO_MSE
    assert r["mean"][1] < r["mean"][0]
    once, twice = (pretrain_baseline(mlp, sinusoid, iterations=3, seed=0).module.state_dict() for _ in range(2))
    assert all(torch.equal(v, twice[k]) for k, v in once.items())  # seeded, whatever the global RNG did
