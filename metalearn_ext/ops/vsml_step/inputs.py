"""Random vsml_step inputs for tests and benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor


def make_inputs(T, A, B, N, M, per_copy=False, dtype=torch.float32, device="cpu", seed=0) -> list[Tensor]:
    """(h, c, fwd_in, bwd_in, weight, bias) with magnitudes that keep every gate away from saturation."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    wshape = (T, 4 * N, 2 * M + N) if per_copy else (4 * N, 2 * M + N)
    bshape = (T, 4 * N) if per_copy else (4 * N,)
    return [
        r(T, A, B, N, scale=0.5),
        r(T, A, B, N),
        r(T, A, M),
        r(T, B, M),
        r(*wshape, scale=0.4 / (2 * M + N) ** 0.5 * 2),
        r(*bshape, scale=0.5),
    ]

