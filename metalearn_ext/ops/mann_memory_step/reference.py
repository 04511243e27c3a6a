"""One LRUA memory step of MANN in plain PyTorch (specs/memory_np.md §1): the truth for every kernel.

Least-used addressing: head h writes (through its gate) into the h-th least-used slot of the previous
usage, and the single least-used slot is zeroed before the write. Slot choice is an index, so no gradient
flows through it; everything else is differentiable.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops.content_read.reference import content_read_reference


def least_used(usage: Tensor, heads: int) -> Tensor:
    """(B, H) indices of the H smallest entries of usage (B, S), smallest first (ties: lowest index)."""
    return torch.sort(usage, dim=-1, stable=True).indices[:, :heads]


def mann_memory_step_reference(memory: Tensor, usage: Tensor, read_weights: Tensor, keys: Tensor, add: Tensor,
                               alpha: Tensor, gamma: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """memory (B, S, W), usage (B, S), read_weights (B, H, S) of the last step; keys, add (B, H, W);
    alpha (B, H) write gates in [0, 1]; gamma the usage decay.

    Returns (memory', read_weights', reads (B, H, W), usage', write_weights (B, H, S)):
        w_lu[b,h] = one-hot of the h-th least-used slot; write_weights = alpha·read_weights + (1−alpha)·w_lu;
        memory' = memory with the least-used slot zeroed, + Σ_h write_weights[h] ⊗ add[h];
        (read_weights', reads) = content_read(memory', keys);
        usage' = gamma·usage + Σ_h read_weights' + Σ_h write_weights.
    """
    B, S, W = memory.shape
    H = keys.shape[1]
    slots = least_used(usage, H)
    w_lu = torch.zeros_like(read_weights).scatter_(2, slots[:, :, None], 1.0)
    a = alpha[:, :, None]
    write_weights = a * read_weights + (1 - a) * w_lu
    keep = torch.ones_like(usage).scatter_(1, slots[:, :1], 0.0)
    memory = memory * keep[:, :, None] + torch.matmul(write_weights.transpose(1, 2), add)
    new_read_weights, reads = content_read_reference(memory, keys)
    usage = gamma * usage + new_read_weights.sum(1) + write_weights.sum(1)
    return memory, new_read_weights, reads, usage, write_weights
