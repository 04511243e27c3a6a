"""Synthetic regression tasks: sinusoids (MAML) and Gaussian-process curves (CNP).

GP curves follow ../specs/memory_np.md §3: squared-exponential kernel
k(x, x') = σ_f² exp(−(x − x')² / (2 ℓ²)) with ℓ = 0.4, σ_f = 1, observation noise variance
2e-2, x ~ U[−2, 2]; the Matérn-5/2 and periodic kernels of :mod:`.gp_kernels` give harder
families. Each task draws ``n_c`` context points and ``n_e`` extra points; the targets are the
context points followed by the extra ones (CNP trains on targets that include the
context). Sizes vary per task, so tensors are padded to the largest size and come with masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .batch import batch_to
from .gp_kernels import KERNELS, gp_kernel

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
        kernel: its name (:data:`metalearn_ext.data.gp_kernels.KERNELS`); period: the periodic
            kernel's period (unused by the others).
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
    kernel: str = "se"
    period: float = 1.0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> GPBatch:
        """The same batch with every tensor on ``device``."""
        return batch_to(self, device, non_blocking)


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
    kernel: str = "se",
    period: float = 1.0,
    generators: Sequence[torch.Generator] | None = None,
) -> GPBatch:
    """Draw ``batch_size`` curves from a GP prior with noisy observations.

    Per task, n_c ~ U{min_context..max_context} and n_e ~ U{min_extra_target..max_extra_target};
    all max_context + max_extra_target inputs are drawn iid from U[x_range] and the curve is
    sampled jointly through one batched float64 Cholesky of (K + (noise_var + 1e-6) I), K the
    ``kernel`` (``"se"``, ``"matern52"``, ``"periodic"`` of period ``period``). Context =
    the first n_c points, targets = the first n_c + n_e points.

    ``generators`` (instead of ``generator``; one per curve, ``batch_size`` of them): curve i is
    drawn from ``generators[i]`` alone, exactly as ``sample_gp_curves(1, generator=generators[i])``
    would draw it, then one batched kernel and Cholesky for all.

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
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    if not period > 0:
        raise ValueError(f"need period > 0, got {period}")
    if not x_range[0] < x_range[1]:
        raise ValueError(f"x_range must be (low, high) with low < high, got {x_range}")
    if generators is not None and (generator is not None or len(generators) != batch_size):
        raise ValueError(f"generators: expected {batch_size} (batch_size) generators and no generator, got "
                         f"{len(generators)}" + (" and a generator" if generator is not None else ""))
    n_total = max_context + max_extra_target
    lo, hi = x_range

    def draw(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        num_context = torch.randint(min_context, max_context + 1, (n,), generator=g)
        num_extra = torch.randint(min_extra_target, max_extra_target + 1, (n,), generator=g)
        x = torch.rand(n, n_total, 1, generator=g, dtype=torch.float64) * (hi - lo) + lo
        eps = torch.randn(n, n_total, 1, generator=g, dtype=torch.float64)
        return num_context, num_extra, x, eps

    draws = [draw(batch_size, generator)] if generators is None else [draw(1, g) for g in generators]
    num_context, num_extra, x, eps = (torch.cat(parts) for parts in zip(*draws))
    num_target = num_context + num_extra
    cov = gp_kernel(kernel, x, x, length_scale=length_scale, signal_std=signal_std, period=period)
    cov.diagonal(dim1=-2, dim2=-1).add_(noise_var + _JITTER)
    y = torch.linalg.cholesky(cov) @ eps

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
        kernel=kernel,
        period=period,
    )


def gp_posterior_predictive(batch: GPBatch, x_target: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact GP posterior predictive of noisy observations at x_target (B, M, 1) (default: the
    batch's targets) given each task's context, in float64 with one batched Cholesky:
    μ = k_tc (K_cc + s I)^−1 y_c and σ² = k_tt + s − k_tc (K_cc + s I)^−1 k_ct, s = noise_var + 1e-6.
    Padded context points are masked out (an identity block with zero y: no influence on the solve).

    Returns:
        (mean (B, M), variance (B, M)) float64.
    """
    xc = batch.context_x.double()
    yc = batch.context_y.double()
    xt = (batch.target_x if x_target is None else x_target).double()
    m = batch.context_mask.double()
    s = batch.noise_var + _JITTER
    k = lambda a, b: gp_kernel(batch.kernel, a, b, length_scale=batch.length_scale, signal_std=batch.signal_std,
                               period=batch.period)
    kcc = k(xc, xc) * (m[:, :, None] * m[:, None, :])
    kcc = kcc + torch.diag_embed(m * s + (1.0 - m))
    ktc = k(xt, xc) * m[:, None, :]
    chol = torch.linalg.cholesky(kcc)
    alpha = torch.cholesky_solve(yc * m[..., None], chol)
    mean = (ktc @ alpha).squeeze(-1)
    v = torch.linalg.solve_triangular(chol, ktc.transpose(1, 2), upper=False)
    var = batch.signal_std**2 + s - v.pow(2).sum(1)  # every kernel here has k(x, x) = σ_f²
    return mean, var


def gp_oracle_log_prob(batch: GPBatch) -> Tensor:
    """Exact GP posterior predictive log-density of each target given its task's context
    (:func:`gp_posterior_predictive`, float64): a target scored as a fresh noisy observation. No
    model can beat this in expectation at the extra (non-context) targets — the yardstick for CNP;
    at a context point, whose y the model was given, a model can (see evaluate/likelihood.py).

    Returns:
        (B, Nt) float64, zero where ``target_mask`` is False.
    """
    mean, var = gp_posterior_predictive(batch)
    yt = batch.target_y.double().squeeze(-1)
    logp = -0.5 * (math.log(2 * math.pi) + var.log() + (yt - mean).pow(2) / var)
    return logp * batch.target_mask
