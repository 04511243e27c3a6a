"""Online SGD / Adam baselines: a linear or one-hidden-layer classifier per stream, batch 1.

Each of T streams has its own classifier (parameters with a leading T), and all T learn at once:
the gradient of the *sum* of the per-stream losses with respect to the stacked parameters is, per
stream, that stream's own gradient. Every example is first predicted, then used for one update
— the same protocol as the meta-learners (online accuracy before the label is used).
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BASELINE_OPTIMIZERS", "online_baseline"]

BASELINE_OPTIMIZERS = ("sgd", "adam")


def init_network(T: int, sizes: list[int], generator: torch.Generator, dtype: torch.dtype) -> list[Tensor]:
    """Per-stream weights and biases (T, out, in) / (T, out), PyTorch's nn.Linear default init."""
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1.0 / math.sqrt(fan_in)
        for shape in ((T, fan_out, fan_in), (T, fan_out)):
            params.append((torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound)
    return params


def _forward(params: list[Tensor], x: Tensor) -> Tensor:
    """x (T, D) -> logits (T, C) through the per-stream layers (ReLU between them)."""
    h = x
    for k in range(0, len(params), 2):
        if k:
            h = torch.relu(h)
        h = torch.baddbmm(params[k + 1].unsqueeze(2), params[k], h.unsqueeze(2)).squeeze(2)
    return h


def online_baseline(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    optimizer: str,
    lr: Tensor | float,
    hidden: int | None = None,
    generator: torch.Generator | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> Tensor:
    """Learn T streams online (batch 1, one update per example after its prediction).

    Args:
        x: (T, L, D) inputs (already standardized).
        y: (T, L) int64 labels in 0..num_classes−1.
        optimizer: "sgd" (plain, no momentum) or "adam".
        lr: a learning rate, or one per stream (T,) — so a whole grid of rates runs in one batch.
        hidden: None for a linear classifier, else the width of one ReLU hidden layer.
        generator: draws the initial parameters (fresh per stream).

    Returns:
        logits (T, L, C): each example's prediction before its own update.
    """
    if optimizer not in BASELINE_OPTIMIZERS:
        raise ValueError(f"online_baseline: optimizer must be one of {BASELINE_OPTIMIZERS}, got {optimizer!r}")
    if x.dim() != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"online_baseline: x must be (T, L, D) and y (T, L), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    T, L, D = x.shape
    lr_t = torch.as_tensor(lr, dtype=x.dtype).expand(T).clone()
    sizes = [D, num_classes] if hidden is None else [D, hidden, num_classes]
    params = init_network(T, sizes, generator or torch.Generator().manual_seed(0), x.dtype)
    lr_of = [lr_t.view(T, *([1] * (p.dim() - 1))) for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    out = []
    for s in range(L):
        with torch.enable_grad():
            leaves = [p.requires_grad_() for p in params]
            logits = _forward(leaves, x[:, s])
            grads = torch.autograd.grad(F.cross_entropy(logits, y[:, s], reduction="sum"), leaves)
        out.append(logits.detach())
        with torch.no_grad():
            if optimizer == "sgd":
                params = [p - a * g for p, a, g in zip(params, lr_of, grads)]
            else:
                b1, b2 = betas
                c1, c2 = 1 - b1 ** (s + 1), 1 - b2 ** (s + 1)
                m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
                v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
                params = [p - a * (mi / c1) / ((vi / c2).sqrt() + eps) for p, a, mi, vi in zip(params, lr_of, m, v)]
    return torch.stack(out, 1)
