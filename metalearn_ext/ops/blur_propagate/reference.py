"""BLUR's propagation in plain PyTorch (specs/blur.md §3): the truth every kernel is tested against."""
from __future__ import annotations

import torch
from torch import Tensor


def mix_states(a: Tensor, mix: Tensor) -> Tensor:
    """m[..., i, c] = Σ_d mix[c, d] · a[..., i, d]; a (T, batch, n, k), mix (k, k) or (T, k, k)."""
    if mix.dim() == 2:
        return torch.einsum("tbid,cd->tbic", a, mix)
    return torch.einsum("tbid,tcd->tbic", a, mix)


def blur_propagate_reference(a: Tensor, weight: Tensor, mix: Tensor, transpose: bool = False) -> Tensor:
    """Forward: out[t,b,j,c] = Σ_i weight[t,i,j,c] · Σ_d mix[c,d] · a[t,b,i,d], a (T, batch, I, k) → (T, batch, J, k).
    transpose=True: out[t,b,i,c] = Σ_j weight[t,i,j,c] · Σ_d mix[c,d] · a[t,b,j,d], a (T, batch, J, k) → (T, batch, I, k).
    """
    m = mix_states(a, mix)
    if transpose:
        return torch.einsum("tijc,tbjc->tbic", weight, m)
    return torch.einsum("tijc,tbic->tbjc", weight, m)
