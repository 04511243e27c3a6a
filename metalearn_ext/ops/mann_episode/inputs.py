"""Random mann_episode inputs for tests and benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor


def make_inputs(B: int, L: int, n: int, H: int, S: int, W: int, dtype: torch.dtype = torch.float32,
                seed: int = 0) -> list[Tensor]:
    """[x_gates (B, L, 4n), w_rec (4n, H·W + n), w_head (2·H·W + H, n), b_head (2·H·W + H)], scaled as a MANN's
    (weights U(−1/√n, 1/√n)-like, so the gates are neither saturated nor flat)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float) -> Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    hw = H * W
    return [r(B, L, 4 * n, scale=1.0), r(4 * n, hw + n, scale=(hw + n) ** -0.5), r(2 * hw + H, n, scale=n ** -0.5),
            r(2 * hw + H, scale=0.3)]
