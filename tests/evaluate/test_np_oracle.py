"""The GP oracle for every kernel: its batched float64 posterior equals a direct per-curve
computation; curves have the kernel's covariance; no predictor beats it on data from its own GP
(within noise); mixtures of Normals score by log-mean-exp; tasks without an oracle."""
import math

import pytest
import torch
from torch.distributions import Normal

from metalearn_ext.data import (
    KERNELS,
    GPBatch,
    gp_kernel,
    gp_oracle_log_prob,
    gp_posterior_predictive,
    sample_gp_curves,
)
from metalearn_ext.evaluate import log_likelihood_vs_oracle, predictive_log_likelihood
from metalearn_ext.evaluate.likelihood import predictive_log_prob
from metalearn_ext.tasks import build_task
from metalearn_ext.tasks.regression import GPTaskConfig

S = 2e-2 + 1e-6  # noise variance + the oracle's jitter


def direct(kernel, d, ls=0.4, sf=1.0, period=1.0):
    """The kernels written out from their formulas, on distances d (float64)."""
    if kernel == "se":
        return sf**2 * torch.exp(-d**2 / (2 * ls**2))
    if kernel == "matern52":
        u = math.sqrt(5) * d / ls
        return sf**2 * (1 + u + u**2 / 3) * torch.exp(-u)
    return sf**2 * torch.exp(-2 * torch.sin(math.pi * d / period) ** 2 / ls**2)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_kernels_match_their_formulas(kernel):
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[None, :, None]
    k = gp_kernel(kernel, x, x, length_scale=0.4, signal_std=1.3, period=0.7)
    d = (x[0, :, 0, None] - x[0, None, :, 0]).abs()
    torch.testing.assert_close(k[0], direct(kernel, d, 0.4, 1.3, 0.7))
    torch.testing.assert_close(k[0].diagonal(), torch.full((9,), 1.69, dtype=torch.float64))
    with pytest.raises(ValueError, match="kernel must be one of"):
        gp_kernel("rbf", x, x, length_scale=1.0, signal_std=1.0)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_oracle_equals_a_direct_float64_posterior(kernel):
    b = sample_gp_curves(12, min_context=1, max_context=8, max_extra_target=6, kernel=kernel, period=0.9,
                         generator=torch.Generator().manual_seed(5))
    assert b.kernel == kernel and b.period == 0.9
    logp = gp_oracle_log_prob(b)
    for t in range(12):
        nc, nt = int(b.num_context[t]), int(b.num_target[t])
        xc, yc = b.context_x[t, :nc, 0].double(), b.context_y[t, :nc, 0].double()
        xt, yt = b.target_x[t, :nt, 0].double(), b.target_y[t, :nt, 0].double()
        k = lambda a, c: direct(kernel, (a[:, None] - c[None, :]).abs(), period=0.9)
        kcc = k(xc, xc) + S * torch.eye(nc, dtype=torch.float64)
        mean = k(xt, xc) @ torch.linalg.solve(kcc, yc)
        var = 1.0 + S - (k(xt, xc) * torch.linalg.solve(kcc, k(xc, xt)).T).sum(1)
        torch.testing.assert_close(logp[t, :nt], Normal(mean, var.sqrt()).log_prob(yt))
    # on a grid of new inputs as well
    grid = torch.linspace(-2, 2, 5)[None, :, None].expand(12, -1, -1)
    mean, var = gp_posterior_predictive(b, grid)
    assert mean.shape == var.shape == (12, 5) and mean.dtype == torch.float64 and bool((var > S - 1e-9).all())


@pytest.mark.parametrize("kernel", ["matern52", "periodic"])
def test_curves_have_the_kernels_covariance(kernel):
    b = sample_gp_curves(20000, min_context=2, max_context=2, min_extra_target=0, max_extra_target=0, kernel=kernel,
                         generator=torch.Generator().manual_seed(2))
    x, y = b.context_x.double().squeeze(-1), b.context_y.double().squeeze(-1)
    k = direct(kernel, (x[:, 0] - x[:, 1]).abs())
    assert abs(float((y**2).mean()) - 1.02) < 0.04
    assert abs(float((y[:, 0] * y[:, 1] - k).mean())) < 0.03


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_no_predictor_beats_the_oracle_on_its_own_gp(kernel):
    """Perturbed posteriors (narrower, wider, shifted) all score below the oracle by more than the
    paired interval; the oracle itself scores a zero gap."""
    task = build_task(GPTaskConfig(kernel=kernel))

    def perturbed(scale, shift):
        def predict(xc, yc, xt, mask):  # the exact posterior from the context alone, then perturbed
            b = GPBatch(xc, yc, mask, xt, xt, torch.ones(xt.shape[:2], dtype=torch.bool), mask.sum(1),
                        torch.full((xt.shape[0],), xt.shape[1]), 0.4, 1.0, 2e-2, kernel, 1.0)
            mean, var = gp_posterior_predictive(b)
            return Normal((mean + shift)[..., None].float(), (scale * var.sqrt())[..., None].float())
        return predict

    exact = log_likelihood_vs_oracle(perturbed(1.0, 0.0), task, curves=128, batch_size=64)
    assert abs(exact["gap"]["mean"]) < 1e-5 and abs(exact["extra"]["gap"]["mean"]) < 1e-5
    for scale, shift in ((0.8, 0.0), (1.25, 0.0), (1.0, 0.1)):
        r = log_likelihood_vs_oracle(perturbed(scale, shift), task, curves=256, batch_size=128)
        assert r["extra"]["gap"]["lo"] > 0, (scale, shift, r["extra"]["gap"])


def test_at_the_context_points_a_model_can_beat_the_oracle():
    """The targets include the context, whose y the model was given: predicting those exactly
    (σ = 0.1, below the noise's 0.14) beats the oracle over all targets, never on the extra ones."""
    task = build_task(GPTaskConfig())

    def copycat(xc, yc, xt, mask):
        b = GPBatch(xc, yc, mask, xt, xt, torch.ones(xt.shape[:2], dtype=torch.bool), mask.sum(1),
                    torch.full((xt.shape[0],), xt.shape[1]), 0.4, 1.0, 2e-2)
        mean, var = gp_posterior_predictive(b)
        mean, std = mean[..., None].float(), var.sqrt()[..., None].float()
        at_context = torch.arange(xt.shape[1])[None, :, None] < mask.sum(1)[:, None, None]
        mean[:, : yc.shape[1]] = torch.where(at_context[:, : yc.shape[1]], yc, mean[:, : yc.shape[1]])
        return Normal(mean, torch.where(at_context, torch.full_like(std, 0.1), std))

    r = log_likelihood_vs_oracle(copycat, task, curves=128, batch_size=64)
    assert r["gap"]["hi"] < 0  # "beats" the oracle over every target
    assert abs(r["extra"]["gap"]["mean"]) < 1e-5  # and is the oracle on the extra ones


def test_mixtures_score_by_log_mean_exp():
    y = torch.randn(2, 3, 1)
    comps = Normal(torch.randn(4, 2, 3, 1), torch.rand(4, 2, 3, 1) + 0.5)
    want = torch.log(comps.log_prob(y).exp().mean(0)).squeeze(-1)
    torch.testing.assert_close(predictive_log_prob(comps, y), want)
    one = Normal(torch.zeros(2, 3, 1), torch.ones(2, 3, 1))
    torch.testing.assert_close(predictive_log_prob(one, y), one.log_prob(y).squeeze(-1))
    with pytest.raises(ValueError, match=r"\(S, 2, 3, 1\)"):
        predictive_log_prob(Normal(torch.zeros(2, 3, 2), 1.0), y)


def test_a_task_without_an_oracle_reports_the_model_alone():
    task = build_task(GPTaskConfig(max_context=5, max_extra_target=5))
    prior = lambda xc, yc, xt, m: Normal(torch.zeros_like(xt), torch.ones_like(xt))
    r = predictive_log_likelihood(prior, task, curves=64, batch_size=20)
    assert "gap" not in r and "oracle" not in r and r["curves"] == 64
    assert sum(s["curves"] for s in r["by_context_size"].values()) == 64
    with_oracle = log_likelihood_vs_oracle(prior, task, curves=64, batch_size=20)
    assert with_oracle["model"]["mean"] == pytest.approx(r["model"]["mean"])
