"""Content-based memory addressing in plain PyTorch (specs/memory_np.md §1): the truth for every kernel."""
from __future__ import annotations

import torch
from torch import Tensor

COS_EPS = 1e-8  # added to each squared norm: a zero memory row or key has cosine 0, never NaN


def cosine_similarity(memory: Tensor, keys: Tensor) -> Tensor:
    """(B, H, S): keys[b,h]·memory[b,s] / sqrt((|keys[b,h]|² + eps)(|memory[b,s]|² + eps))."""
    dots = torch.matmul(keys, memory.transpose(1, 2))
    key_inv = torch.rsqrt((keys * keys).sum(-1) + COS_EPS)  # (B, H)
    mem_inv = torch.rsqrt((memory * memory).sum(-1) + COS_EPS)  # (B, S)
    return dots * key_inv[:, :, None] * mem_inv[:, None, :]


def content_read_reference(memory: Tensor, keys: Tensor, beta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """weights (B, H, S) = softmax_S(beta · cos(keys[h], memory[s])), reads (B, H, W) = weights · memory.

    memory (B, S, W); keys (B, H, W); beta (B, H) or None (then 1).
    """
    scores = cosine_similarity(memory, keys)
    if beta is not None:
        scores = scores * beta[:, :, None]
    weights = torch.softmax(scores, dim=-1)
    return weights, torch.matmul(weights, memory)
