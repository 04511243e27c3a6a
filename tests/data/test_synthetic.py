"""Sinusoid tasks and GP curves (SE kernel, masks, float64 Cholesky, exact oracle)."""
import math

import pytest
import torch

from metalearn_ext.data import (
    gp_oracle_log_prob,
    sample_gp_curves,
    sample_sinusoid_tasks,
    se_kernel,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_sinusoid_ranges_formula_and_seed():
    b = sample_sinusoid_tasks(500, 11, generator=gen())
    assert b.x.shape == b.y.shape == (500, 11, 1) and b.amplitude.shape == b.phase.shape == (500,)
    assert 0.1 <= float(b.amplitude.min()) and float(b.amplitude.max()) <= 5.0
    assert 0.0 <= float(b.phase.min()) and float(b.phase.max()) <= math.pi
    assert -5.0 <= float(b.x.min()) and float(b.x.max()) <= 5.0
    torch.testing.assert_close(b.y, b.amplitude[:, None, None] * torch.sin(b.x - b.phase[:, None, None]))
    assert torch.equal(sample_sinusoid_tasks(500, 11, generator=gen()).y, b.y)
    assert not torch.equal(sample_sinusoid_tasks(500, 11, generator=gen(1)).y, b.y)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_tasks=0, num_points=3), "num_tasks"), (dict(num_tasks=2, num_points=0), "num_points"),
    (dict(num_tasks=2, num_points=3, amplitude_range=(5.0, 0.1)), "amplitude_range"),
])
def test_sinusoid_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_sinusoid_tasks(**kwargs)


def test_gp_shapes_masks_and_padding():
    b = sample_gp_curves(64, min_context=3, max_context=9, min_extra_target=2, max_extra_target=10, generator=gen())
    assert b.context_x.shape == b.context_y.shape == (64, 9, 1)
    assert b.target_x.shape == b.target_y.shape == (64, 19, 1)
    assert torch.equal(b.context_mask.sum(1), b.num_context) and torch.equal(b.target_mask.sum(1), b.num_target)
    assert int(b.num_context.min()) >= 3 and int(b.num_context.max()) <= 9
    extra = b.num_target - b.num_context
    assert int(extra.min()) >= 2 and int(extra.max()) <= 10
    assert b.num_context.unique().numel() > 1  # sizes do vary
    # Targets start with the context points; padding is zero.
    cm = b.context_mask[..., None]
    assert torch.equal(b.target_x[:, :9] * cm, b.context_x) and torch.equal(b.target_y[:, :9] * cm, b.context_y)
    assert not b.context_x[~b.context_mask].any() and not b.target_y[~b.target_mask].any()
    x = b.target_x[b.target_mask]
    assert float(x.min()) >= -2 and float(x.max()) <= 2
    assert b.context_x.dtype == torch.float32


def test_gp_samples_have_the_se_covariance():
    b = sample_gp_curves(20000, min_context=2, max_context=2, min_extra_target=0, max_extra_target=0,
                         generator=gen(2))
    x, y = b.context_x.double().squeeze(-1), b.context_y.double().squeeze(-1)
    k = se_kernel(x[:, :1, None], x[:, 1:, None], 0.4, 1.0).flatten()
    assert abs(float((y**2).mean()) - 1.02) < 0.04  # signal variance + noise variance
    assert abs(float((y[:, 0] * y[:, 1] - k).mean())) < 0.03  # E[y1 y2 | x] = k(x1, x2)
    assert abs(float(y.mean())) < 0.03


def test_gp_oracle_matches_unpadded_posterior_and_beats_the_prior():
    b = sample_gp_curves(16, min_context=1, max_context=6, max_extra_target=5, generator=gen(3))
    logp = gp_oracle_log_prob(b)
    assert logp.shape == (16, 11) and not logp[~b.target_mask].any()
    s = b.noise_var + 1e-6
    for t in range(16):
        nc, nt = int(b.num_context[t]), int(b.num_target[t])
        xc, yc = b.context_x[t, :nc].double(), b.context_y[t, :nc].double()
        xt, yt = b.target_x[t, :nt].double(), b.target_y[t, :nt].double()
        kcc = se_kernel(xc[None], xc[None], 0.4, 1.0)[0] + s * torch.eye(nc, dtype=torch.float64)
        ktc = se_kernel(xt[None], xc[None], 0.4, 1.0)[0]
        mean = ktc @ torch.linalg.solve(kcc, yc)
        var = 1.0 + s - (ktc @ torch.linalg.solve(kcc, ktc.T)).diagonal()
        want = torch.distributions.Normal(mean.squeeze(-1), var.sqrt()).log_prob(yt.squeeze(-1))
        torch.testing.assert_close(logp[t, :nt], want)
    prior = torch.distributions.Normal(0.0, math.sqrt(1.0 + s)).log_prob(b.target_y.double().squeeze(-1))
    assert float(logp.sum()) > float((prior * b.target_mask).sum())


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=2, min_context=5, max_context=3), "min_context"),
    (dict(batch_size=2, min_extra_target=-1), "min_extra_target"), (dict(batch_size=2, length_scale=0.0), "length_scale"),
    (dict(batch_size=2, x_range=(1.0, 1.0)), "x_range"),
])
def test_gp_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_gp_curves(**kwargs)
