"""mann_memory_step's argument checks and fake (shape-only) implementation."""
from __future__ import annotations

import math

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str

OP = "mann_memory_step"


def check_args(memory, usage, read_weights, keys, add, alpha, gamma) -> None:
    require_tensors(OP, memory=memory, usage=usage, read_weights=read_weights, keys=keys, add=add, alpha=alpha)
    if memory.dim() != 3 or memory.numel() == 0:
        raise ValueError(f"{OP}: memory must be a non-empty tensor of shape (B, S, W), got {shape_str(*memory.shape)}")
    B, S, W = memory.shape
    if keys.dim() != 3 or keys.shape[0] != B or keys.shape[2] != W or not 1 <= keys.shape[1] <= S:
        raise ValueError(f"{OP}: keys must be of shape (B, H, W) = {shape_str(B, 'H', W)} with 1 <= H <= S = {S} "
                         f"(B, S, W from memory), got {shape_str(*keys.shape)}")
    H = keys.shape[1]
    expected = {"usage": (B, S), "read_weights": (B, H, S), "add": (B, H, W), "alpha": (B, H)}
    names = {"usage": "(B, S)", "read_weights": "(B, H, S)", "add": "(B, H, W)", "alpha": "(B, H)"}
    for name, t in (("usage", usage), ("read_weights", read_weights), ("add", add), ("alpha", alpha)):
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{OP}: {name} must be of shape {names[name]} = {shape_str(*expected[name])}, "
                             f"got {shape_str(*t.shape)}")
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma):
        raise ValueError(f"{OP}: gamma must be a finite float, got {gamma!r}")
    require_like(OP, "memory", memory, (("usage", usage), ("read_weights", read_weights), ("keys", keys),
                                        ("add", add), ("alpha", alpha)))


def fake_mann_memory_step(memory, usage, read_weights, keys, add, alpha, gamma):
    B, H, W = keys.shape
    return (memory.new_empty(memory.shape), memory.new_empty(read_weights.shape), memory.new_empty((B, H, W)),
            memory.new_empty(usage.shape), memory.new_empty(read_weights.shape))
