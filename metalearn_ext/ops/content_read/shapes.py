"""content_read's argument checks and fake (shape-only) implementation."""
from __future__ import annotations

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str

OP = "content_read"


def check_args(memory, keys, beta) -> None:
    require_tensors(OP, memory=memory, keys=keys, **({} if beta is None else {"beta": beta}))
    if memory.dim() != 3 or memory.numel() == 0:
        raise ValueError(f"{OP}: memory must be a non-empty tensor of shape (B, S, W), got {shape_str(*memory.shape)}")
    B, S, W = memory.shape
    if keys.dim() != 3 or keys.shape[0] != B or keys.shape[2] != W or keys.shape[1] < 1:
        raise ValueError(f"{OP}: keys must be of shape (B, H, W) = {shape_str(B, 'H', W)} (B, W from memory), "
                         f"got {shape_str(*keys.shape)}")
    H = keys.shape[1]
    if beta is not None and beta.shape != (B, H):
        raise ValueError(f"{OP}: beta must be None or of shape (B, H) = {shape_str(B, H)} (H from keys), "
                         f"got {shape_str(*beta.shape)}")
    require_like(OP, "memory", memory, [("keys", keys)] + ([] if beta is None else [("beta", beta)]))


def fake_content_read(memory, keys, beta):
    B, S, W = memory.shape
    H = keys.shape[1]
    return memory.new_empty((B, H, S)), memory.new_empty((B, H, W))
