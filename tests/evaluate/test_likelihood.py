"""Log-likelihood against the GP oracle: an independently written exact posterior scores the
oracle's value (gap ≈ 0), worse predictors a positive gap, growing with the context for one
that ignores it; padded targets never count; bad output."""
import pytest
import torch
from torch.distributions import Normal

from metalearn_ext.evaluate import log_likelihood_vs_oracle
from metalearn_ext.tasks import build_task
from metalearn_ext.tasks.regression import GPTaskConfig

LS, SF, NOISE = 0.4, 1.0, 2e-2 + 1e-6  # the task's kernel; the oracle adds a 1e-6 jitter to the noise


@pytest.fixture(scope="module")
def gp():
    return build_task(GPTaskConfig())


def kernel(a, b):
    return SF**2 * torch.exp(-(a[:, None] - b[None, :]) ** 2 / (2 * LS**2))


def exact_posterior(xc, yc, xt, mask):
    """The GP posterior predictive, one curve at a time on its real context points only."""
    means, stds = [], []
    for b in range(xc.shape[0]):
        n = int(mask[b].sum())
        x, y, t = xc[b, :n, 0].double(), yc[b, :n, 0].double(), xt[b, :, 0].double()
        k = kernel(x, x) + NOISE * torch.eye(n, dtype=torch.float64)
        ks = kernel(t, x)
        means.append(ks @ torch.linalg.solve(k, y))
        stds.append((SF**2 + NOISE - (ks * torch.linalg.solve(k, ks.T).T).sum(1)).sqrt())
    return Normal(torch.stack(means)[..., None], torch.stack(stds)[..., None])


def prior(xc, yc, xt, mask):
    """Ignores the context: the GP's marginal at every target."""
    return Normal(torch.zeros_like(xt), torch.full_like(xt, (SF**2 + NOISE) ** 0.5))


def test_the_exact_posterior_matches_the_oracle(gp):
    r = log_likelihood_vs_oracle(exact_posterior, gp, curves=128, batch_size=50)
    assert abs(r["gap"]["mean"]) < 1e-6 and r["gap"]["half"] < 1e-6
    assert r["model"]["mean"] == pytest.approx(r["oracle"]["mean"], abs=1e-6) and r["curves"] == 128
    assert r["oracle"]["mean"] > 0  # noise std 0.14: well-predicted points have density > 1
    same = log_likelihood_vs_oracle(exact_posterior, gp, curves=128, batch_size=128)
    assert same["oracle"]["mean"] == pytest.approx(r["oracle"]["mean"], abs=1e-12)


def test_worse_predictors_fall_short_and_by_context_size(gp):
    def too_wide(*args):
        d = exact_posterior(*args)
        return Normal(d.mean, 2 * d.stddev)

    wide = log_likelihood_vs_oracle(too_wide, gp, curves=64)
    assert wide["gap"]["lo"] > 0.1
    r = log_likelihood_vs_oracle(prior, gp, curves=256)
    assert r["gap"]["lo"] > 0.5
    sizes = r["by_context_size"]
    assert sum(s["curves"] for s in sizes.values()) == 256 and min(sizes) >= 3 and max(sizes) <= 50
    assert all(s["gap"] == pytest.approx(s["oracle"] - s["model"]) for s in sizes.values())
    gap = lambda keep: sum(s["gap"] * s["curves"] for c, s in sizes.items() if keep(c)) / sum(
        s["curves"] for c, s in sizes.items() if keep(c))
    assert gap(lambda c: c >= 30) > gap(lambda c: c <= 10) + 0.3  # the oracle gains from context; the prior not


def test_padded_targets_do_not_count(gp):
    def nan_on_padding(xc, yc, xt, mask):
        d = exact_posterior(xc, yc, xt, mask)
        loc = torch.where(xt == 0, float("nan"), d.mean)  # padded targets sit at x = 0
        return Normal(loc, d.stddev, validate_args=False)

    r = log_likelihood_vs_oracle(nan_on_padding, gp, curves=32)
    assert abs(r["gap"]["mean"]) < 1e-6


def test_bad_output(gp):
    with pytest.raises(ValueError, match="Normal"):
        log_likelihood_vs_oracle(lambda *a: a[2], gp, curves=4)
    with pytest.raises(ValueError, match=r"\(4, 100, 1\)"):
        log_likelihood_vs_oracle(lambda xc, yc, xt, m: Normal(xt[:, :10], 1.0), gp, curves=4)
    with pytest.raises(ValueError, match="curves"):
        log_likelihood_vs_oracle(prior, gp, curves=0)
