"""mann_episode's argument checks and fake (shape-only) implementation."""
from __future__ import annotations

import math

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str

OP = "mann_episode"


def _int(name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{OP}: {name} must be a positive int, got {v!r}")
    return v


def check_args(x_gates, w_rec, w_head, b_head, heads, slots, gamma, memory_init) -> None:
    require_tensors(OP, x_gates=x_gates, w_rec=w_rec, w_head=w_head, b_head=b_head)
    H, S = _int("heads", heads), _int("slots", slots)
    if H > S:
        raise ValueError(f"{OP}: heads ({H}) must be <= slots ({S})")
    if x_gates.dim() != 3 or x_gates.numel() == 0 or x_gates.shape[2] % 4:
        raise ValueError(f"{OP}: x_gates must be a non-empty tensor of shape (B, L, 4n), got "
                         f"{shape_str(*x_gates.shape)}")
    n = x_gates.shape[2] // 4
    if w_rec.dim() != 2 or w_rec.shape[0] != 4 * n or w_rec.shape[1] <= n or (w_rec.shape[1] - n) % H:
        raise ValueError(f"{OP}: w_rec must be of shape (4n, H·W + n) = {shape_str(4 * n, f'{H}·W + {n}')} "
                         f"(n from x_gates, H = heads), got {shape_str(*w_rec.shape)}")
    hw = w_rec.shape[1] - n
    if tuple(w_head.shape) != (2 * hw + H, n):
        raise ValueError(f"{OP}: w_head must be of shape (2·H·W + H, n) = {shape_str(2 * hw + H, n)}, got "
                         f"{shape_str(*w_head.shape)}")
    if tuple(b_head.shape) != (2 * hw + H,):
        raise ValueError(f"{OP}: b_head must be of shape (2·H·W + H,) = {shape_str(2 * hw + H)}, got "
                         f"{shape_str(*b_head.shape)}")
    for name, v in (("gamma", gamma), ("memory_init", memory_init)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{OP}: {name} must be a finite float, got {v!r}")
    require_like(OP, "x_gates", x_gates, (("w_rec", w_rec), ("w_head", w_head), ("b_head", b_head)))


def fake_mann_episode(x_gates, w_rec, w_head, b_head, heads, slots, gamma, memory_init):
    B, L, n4 = x_gates.shape
    n = n4 // 4
    # the kernel writes step-major (L, B, ·) buffers and returns them as (B, L, ·) views
    return (x_gates.new_empty((L, B, n)).transpose(0, 1),
            x_gates.new_empty((L, B, w_rec.shape[1] - n)).transpose(0, 1))
