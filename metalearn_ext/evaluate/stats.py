"""Means with 95% Student-t confidence intervals, over independent units (episodes, tasks, curves)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["interval", "paired_interval", "t_quantile"]


def t_quantile(n: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with n − 1 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, n - 1))


def interval(values: Tensor | Sequence[float]) -> dict:
    """Mean and 95% Student-t interval of n independent values (any shape, flattened).

    Returns:
        ``{"mean", "lo", "hi", "half", "n"}``: half = t_{0.975, n−1} · s / √n (s the unbiased
        standard deviation), lo/hi = mean ∓ half; half, lo and hi are NaN when n = 1. Computed in
        float64 (a mean of 10⁵ float32 accuracies would otherwise drift in the 4th digit).

    Raises:
        ValueError: no values.
    """
    v = torch.as_tensor(values).detach().flatten().to("cpu", torch.float64)
    n = v.numel()
    if n == 0:
        raise ValueError("interval of no values: need at least one")
    mean = float(v.mean())
    half = t_quantile(n) * float(v.std(correction=1)) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "half": half, "n": n}


def paired_interval(a: Tensor | Sequence[float], b: Tensor | Sequence[float]) -> dict:
    """:func:`interval` of the differences a − b of paired values (the same episodes scored
    twice): much tighter than two separate intervals when a and b move together.

    Raises:
        ValueError: a and b differ in shape.
    """
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    if a.shape != b.shape:
        raise ValueError(f"paired_interval needs values of one shape, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    return interval(a.to("cpu", torch.float64) - b.to("cpu", torch.float64))
