"""Synthetic regression tasks: sinusoids (MAML) and Gaussian-process curves (CNP).

GP curves follow ../specs/memory_np.md §3: squared-exponential kernel
k(x, x') = σ_f² exp(−(x − x')² / (2 ℓ²)) with ℓ = 0.4, σ_f = 1, observation noise variance
2e-2, x ~ U[−2, 2]. Each task draws ``n_c`` context points and ``n_e`` extra points; the targets
are the context points followed by the extra ones (CNP trains on targets that include the
context). Sizes vary per task, so tensors are padded to the largest size and come with masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .batch import batch_to

_JITTER = 1e-6  # added to the covariance diagonal so the float64 Cholesky never fails


@dataclass(frozen=True)
class SinusoidBatch:
    """Sinusoid regression tasks y = A · sin(x − φ).

    Attributes:
        x: (T, P, 1) inputs.  y: (T, P, 1) targets.
        amplitude: (T,) A.  phase: (T,) φ.
    """

    x: Tensor
    y: Tensor
    amplitude: Tensor
    phase: Tensor


def sample_sinusoid_tasks(
    num_tasks: int,
    num_points: int,
    *,
    generator: torch.Generator | None = None,
    amplitude_range: tuple[float, float] = (0.1, 5.0),
    phase_range: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> SinusoidBatch:
    """Sample ``num_tasks`` sinusoids (A ~ U[0.1, 5], φ ~ U[0, π]) at ``num_points`` inputs
    x ~ U[−5, 5] each; returns x, y of shape (num_tasks, num_points, 1)."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be ≥ 1, got {num_tasks}")
    if num_points < 1:
        raise ValueError(f"num_points must be ≥ 1, got {num_points}")
    for arg, (lo, hi) in (("amplitude_range", amplitude_range), ("phase_range", phase_range),
                          ("x_range", x_range)):
        if not lo <= hi:
            raise ValueError(f"{arg} must be (low, high) with low ≤ high, got {(lo, hi)}")

    def uniform(shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
        return torch.rand(shape, generator=generator) * (hi - lo) + lo

    amplitude = uniform((num_tasks,), *amplitude_range)
    phase = uniform((num_tasks,), *phase_range)
    x = uniform((num_tasks, num_points, 1), *x_range)
    y = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
    return SinusoidBatch(x, y, amplitude, phase)


@dataclass(frozen=True)
class GPBatch:
    """GP regression tasks padded to common sizes.

    Attributes:
        context_x, context_y: (B, Nc, 1); entries at or past ``num_context[b]`` are zero.
        context_mask: (B, Nc) bool, True for real context points.
        target_x, target_y: (B, Nt, 1); the first ``num_context[b]`` targets are the context.
        target_mask: (B, Nt) bool, True for real targets.
        num_context, num_target: (B,) int64 counts.
        length_scale, signal_std, noise_var: the kernel the curves were drawn from.
    """

    context_x: Tensor
    context_y: Tensor
    context_mask: Tensor
    target_x: Tensor
    target_y: Tensor
    target_mask: Tensor
    num_context: Tensor
    num_target: Tensor
    length_scale: float
    signal_std: float
    noise_var: float

    def to(self, device: torch.device | str, non_blocking: bool = False) -> GPBatch:
        """The same batch with every tensor on ``device``."""
        return batch_to(self, device, non_blocking)


def se_kernel(x1: Tensor, x2: Tensor, length_scale: float, signal_std: float) -> Tensor:
    """Squared-exponential kernel: (B, N, 1), (B, M, 1) → (B, N, M)."""
    sq = (x1 - x2.transpose(-1, -2)).pow(2)
    return signal_std**2 * torch.exp(-0.5 * sq / length_scale**2)


def sample_gp_curves(
    batch_size: int,
    *,
    min_context: int = 3,
    max_context: int = 50,
    min_extra_target: int = 1,
    max_extra_target: int = 50,
    length_scale: float = 0.4,
    signal_std: float = 1.0,
    noise_var: float = 2e-2,
    x_range: tuple[float, float] = (-2.0, 2.0),
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> GPBatch:
    """Draw ``batch_size`` curves from a GP prior with noisy observations.

    Per task, n_c ~ U{min_context..max_context} and n_e ~ U{min_extra_target..max_extra_target};
    all max_context + max_extra_target inputs are drawn iid from U[x_range] and the curve is
    sampled jointly through one batched float64 Cholesky of (K + (noise_var + 1e-6) I). Context =
    the first n_c points, targets = the first n_c + n_e points.

    Returns:
        GPBatch with Nc = max_context and Nt = max_context + max_extra_target.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if not 1 <= min_context <= max_context:
        raise ValueError(f"need 1 ≤ min_context ≤ max_context, got {min_context}, {max_context}")
    if not 0 <= min_extra_target <= max_extra_target:
        raise ValueError(
            f"need 0 ≤ min_extra_target ≤ max_extra_target, got {min_extra_target}, {max_extra_target}"
        )
    if length_scale <= 0 or signal_std <= 0 or noise_var < 0:
        raise ValueError(
            f"need length_scale > 0, signal_std > 0, noise_var ≥ 0; got {length_scale}, {signal_std}, {noise_var}"
        )
    if not x_range[0] < x_range[1]:
        raise ValueError(f"x_range must be (low, high) with low < high, got {x_range}")
    n_total = max_context + max_extra_target
    num_context = torch.randint(min_context, max_context + 1, (batch_size,), generator=generator)
    num_extra = torch.randint(min_extra_target, max_extra_target + 1, (batch_size,), generator=generator)
    num_target = num_context + num_extra

    lo, hi = x_range
    x = torch.rand(batch_size, n_total, 1, generator=generator, dtype=torch.float64) * (hi - lo) + lo
    cov = se_kernel(x, x, length_scale, signal_std)
    cov.diagonal(dim1=-2, dim2=-1).add_(noise_var + _JITTER)
    chol = torch.linalg.cholesky(cov)
    eps = torch.randn(batch_size, n_total, 1, generator=generator, dtype=torch.float64)
    y = chol @ eps

    position = torch.arange(n_total)
    target_mask = position[None, :] < num_target[:, None]
    context_mask = target_mask[:, :max_context] & (position[None, :max_context] < num_context[:, None])
    x = x.to(dtype) * target_mask[..., None]
    y = y.to(dtype) * target_mask[..., None]
    cm = context_mask[..., None]
    return GPBatch(
        context_x=x[:, :max_context] * cm,
        context_y=y[:, :max_context] * cm,
        context_mask=context_mask,
        target_x=x,
        target_y=y,
        target_mask=target_mask,
        num_context=num_context,
        num_target=num_target,
        length_scale=length_scale,
        signal_std=signal_std,
        noise_var=noise_var,
    )


def gp_oracle_log_prob(batch: GPBatch) -> Tensor:
    """Exact GP posterior predictive log-density of each target given its task's context.

    log N(y_t; μ_t, σ_t²) with μ_t = k_tc (K_cc + s I)^−1 y_c and
    σ_t² = k_tt + s − k_tc (K_cc + s I)^−1 k_ct, s = noise_var + 1e-6, computed in float64 with
    padded context points masked out. No model can beat this in expectation on the batch's
    distribution — the yardstick for CNP.

    Returns:
        (B, Nt) float64, zero where ``target_mask`` is False.
    """
    xc = batch.context_x.double()
    yc = batch.context_y.double()
    xt = batch.target_x.double()
    m = batch.context_mask.double()
    s = batch.noise_var + _JITTER
    # Padded context rows/columns become an identity block with zero y: they then have no
    # influence on the solve.
    kcc = se_kernel(xc, xc, batch.length_scale, batch.signal_std) * (m[:, :, None] * m[:, None, :])
    kcc = kcc + torch.diag_embed(m * s + (1.0 - m))
    ktc = se_kernel(xt, xc, batch.length_scale, batch.signal_std) * m[:, None, :]
    chol = torch.linalg.cholesky(kcc)
    alpha = torch.cholesky_solve(yc * m[..., None], chol)
    mean = (ktc @ alpha).squeeze(-1)
    v = torch.linalg.solve_triangular(chol, ktc.transpose(1, 2), upper=False)
    var = batch.signal_std**2 + s - v.pow(2).sum(1)
    yt = batch.target_y.double().squeeze(-1)
    logp = -0.5 * (math.log(2 * math.pi) + var.log() + (yt - mean).pow(2) / var)
    return logp * batch.target_mask
