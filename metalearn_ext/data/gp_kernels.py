"""Stationary covariance functions of the GP regression tasks (1-D inputs), by name.

* ``"se"``: squared exponential σ_f² exp(−d² / (2ℓ²)) (memory_np.md §3: ℓ = 0.4, σ_f = 1).
* ``"matern52"``: Matérn-5/2, σ_f² (1 + √5 d/ℓ + 5d²/(3ℓ²)) exp(−√5 d/ℓ): rougher curves
  (twice differentiable rather than infinitely), a harder family at the same ℓ.
* ``"periodic"``: σ_f² exp(−2 sin²(π d / p) / ℓ²) (MacKay), period p.

Each maps x1 (B, N, 1) and x2 (B, M, 1) to (B, N, M) in the inputs' dtype.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["KERNELS", "gp_kernel", "matern52_kernel", "periodic_kernel", "se_kernel"]


def _distance(x1: Tensor, x2: Tensor) -> Tensor:
    return (x1 - x2.transpose(-1, -2)).abs()


def se_kernel(x1: Tensor, x2: Tensor, length_scale: float, signal_std: float) -> Tensor:
    """Squared-exponential kernel: (B, N, 1), (B, M, 1) → (B, N, M)."""
    sq = (x1 - x2.transpose(-1, -2)).pow(2)
    return signal_std**2 * torch.exp(-0.5 * sq / length_scale**2)


def matern52_kernel(x1: Tensor, x2: Tensor, length_scale: float, signal_std: float) -> Tensor:
    """Matérn-5/2 kernel: (B, N, 1), (B, M, 1) → (B, N, M)."""
    u = math.sqrt(5.0) * _distance(x1, x2) / length_scale
    return signal_std**2 * (1.0 + u + u.pow(2) / 3.0) * torch.exp(-u)


def periodic_kernel(x1: Tensor, x2: Tensor, length_scale: float, signal_std: float, period: float) -> Tensor:
    """Periodic kernel of period ``period``: (B, N, 1), (B, M, 1) → (B, N, M)."""
    s = torch.sin(math.pi * _distance(x1, x2) / period)
    return signal_std**2 * torch.exp(-2.0 * s.pow(2) / length_scale**2)


KERNELS: dict[str, Callable[..., Tensor]] = {"se": se_kernel, "matern52": matern52_kernel, "periodic": periodic_kernel}


def gp_kernel(kernel: str, x1: Tensor, x2: Tensor, *, length_scale: float, signal_std: float,
              period: float = 1.0) -> Tensor:
    """The kernel named ``kernel`` (one of :data:`KERNELS`) between x1 (B, N, 1) and x2 (B, M, 1)
    -> (B, N, M); ``period`` is read by ``"periodic"`` only."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    if kernel == "periodic":
        return periodic_kernel(x1, x2, length_scale, signal_std, period)
    return KERNELS[kernel](x1, x2, length_scale, signal_std)
