"""Few-shot accuracy ± 95% on held-out digit classes: exact accuracy arithmetic, a real
classifier beats chance, seeds, batch-size independence, gradients inside predict, bad output."""
import pytest
import torch
import torch.nn.functional as F

from metalearn_ext.evaluate import few_shot_accuracy, few_shot_table
from metalearn_ext.tasks import build_task
from metalearn_ext.tasks.episodes import EpisodesTaskConfig


@pytest.fixture(scope="module")
def digits():
    return build_task(EpisodesTaskConfig(dataset="digits", rotations=False, image_size=8))


def prototypes(support_x, support_y, query_x):
    """Nearest class mean in pixel space: (E, N·Q, N) logits."""
    onehot = F.one_hot(support_y).float()  # (E, N·K, N)
    protos = onehot.transpose(1, 2) @ support_x.flatten(2) / onehot.sum(1)[..., None]
    return -torch.cdist(query_x.flatten(2), protos).pow(2)


def always_class_0(support_x, support_y, query_x):
    n = int(support_y.max()) + 1
    return F.one_hot(torch.zeros(query_x.shape[:2], dtype=torch.long), n).float()


def test_constant_prediction_scores_exactly_one_in_n(digits):
    r = few_shot_accuracy(always_class_0, digits, n_way=5, k_shot=1, n_query=3, episodes=20)
    assert r["mean"] == pytest.approx(0.2, abs=1e-12) and r["half"] == pytest.approx(0.0, abs=1e-12)
    assert {k: r[k] for k in ("episodes", "n_way", "k_shot", "n_query")} == {"episodes": 20, "n_way": 5, "k_shot": 1,
                                                                           "n_query": 3}


def test_a_real_classifier_beats_chance_and_more_shots_help(digits):
    one = few_shot_accuracy(prototypes, digits, n_way=5, k_shot=1, episodes=200)
    five = few_shot_accuracy(prototypes, digits, n_way=5, k_shot=5, episodes=200)
    assert one["lo"] > 0.5 and five["mean"] > one["mean"]
    assert 0 < one["half"] < 0.05 and one["lo"] < one["mean"] < one["hi"]


def test_same_episodes_whatever_the_batch_size_and_new_ones_per_seed(digits):
    seen = {}

    def recording(tag):
        def predict(sx, sy, qx):
            seen.setdefault(tag, []).append(sx)
            return prototypes(sx, sy, qx)
        return predict

    a = few_shot_accuracy(recording("a"), digits, n_way=5, k_shot=1, episodes=30, batch_size=7)
    b = few_shot_accuracy(recording("b"), digits, n_way=5, k_shot=1, episodes=30, batch_size=30)
    few_shot_accuracy(recording("c"), digits, n_way=5, k_shot=1, episodes=30, seed=1)
    assert a == b and torch.equal(torch.cat(seen["a"]), torch.cat(seen["b"]))
    assert not torch.equal(torch.cat(seen["a"]), torch.cat(seen["c"]))
    # never the draws of a run seeded 0 (they use the run seed itself)
    raw = digits.sample(range(30), seed=0, step=0, split="test", n_way=5, k_shot=1, n_query=15)
    assert not torch.equal(torch.cat(seen["a"]), raw.support_images)


def test_no_grad_outside_but_predict_may_take_gradients(digits):
    def adapting(sx, sy, qx):
        assert not torch.is_grad_enabled()
        with torch.enable_grad():  # as MAML's predict does: fit a linear head on the support set
            w = torch.zeros(sx.shape[0], sx[0, 0].numel(), 5, requires_grad=True)  # one head per episode
            loss = F.cross_entropy((sx.flatten(2) @ w).flatten(0, 1), sy.flatten())
            (g,) = torch.autograd.grad(loss, w)
        return qx.flatten(2) @ (w - 10.0 * g)

    r = few_shot_accuracy(adapting, digits, n_way=5, k_shot=5, episodes=40)
    assert r["mean"] > 0.5


def test_bad_output_and_arguments(digits, capsys):
    with pytest.raises(ValueError, match=r"\(E, N·Q, N\) = \(4, 15, 5\), got \(4, 15, 4\)"):
        few_shot_accuracy(lambda sx, sy, qx: torch.zeros(4, 15, 4), digits, n_way=5, k_shot=1, n_query=3, episodes=4)
    with pytest.raises(ValueError, match="n_way=6 .*'test' split"):
        few_shot_accuracy(prototypes, digits, n_way=6, k_shot=1, episodes=4)
    with pytest.raises(ValueError, match="episodes"):
        few_shot_accuracy(prototypes, digits, n_way=5, k_shot=1, episodes=0)
    few_shot_accuracy(prototypes, digits, n_way=5, k_shot=1, episodes=4, progress=True)
    assert "5-way 1-shot" in capsys.readouterr().err


def test_table():
    r1 = {"mean": 0.98123, "half": 0.00234, "lo": 0, "hi": 0, "episodes": 1000, "n_way": 5, "k_shot": 1, "n_query": 15}
    r2 = {**r1, "mean": 0.5, "half": 0.1, "n_way": 20, "k_shot": 5}
    table = few_shot_table([r1, r2])
    assert table.splitlines()[0] == "| setting | accuracy (%) | episodes |"
    assert "| 5-way 1-shot | 98.12 ± 0.23 | 1000 |" in table and "| 20-way 5-shot | 50.00 ± 10.00 | 1000 |" in table
    named = few_shot_table({"protonet": [r1, r2], "maml": r1})
    assert "| maml | 5-way 1-shot | 98.12 ± 0.23 | 1000 |" in named and len(named.splitlines()) == 5
