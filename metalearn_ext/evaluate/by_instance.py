"""Accuracy by instance (MANN, Santoro et al. 2016, Table 1): how often the prediction at the j-th
showing of a class within a label-offset episode is right, j = 1 (a guess: its label has not
been seen) … M."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.evaluate.stats import interval

__all__ = ["accuracy_by_instance", "by_instance_table"]


def accuracy_by_instance(correct: Tensor, instance: Tensor) -> dict:
    """Accuracy at each instance with 95% intervals over episodes.

    Args:
        correct: (E, L) bool (or 0/1): whether step s of episode e was predicted right.
        instance: (E, L) int64, earlier showings of the same class in the episode (0 at the first;
            :class:`metalearn_ext.data.LabelOffsetBatch`'s ``instance``).

    An episode's accuracy at instance j is the mean over its steps with ``instance == j − 1`` (one
    per class); the interval is over the episodes that have such steps (all, for MANN's episodes).

    Returns:
        ``{"instance": [1 … M], "mean": [...], "half": [...], "lo": [...], "hi": [...],
        "episodes": [n per instance]}``, accuracies as fractions in [0, 1].
    """
    if correct.dim() != 2 or correct.shape != instance.shape:
        raise ValueError(f"correct and instance must both be (E, L), got {tuple(correct.shape)} and "
                         f"{tuple(instance.shape)}")
    if instance.dtype.is_floating_point or instance.dtype == torch.bool:
        raise ValueError(f"instance must be an integer tensor, got {instance.dtype}")
    if instance.numel() == 0:
        raise ValueError("accuracy_by_instance: no steps")
    if int(instance.min()) < 0:
        raise ValueError(f"instance must be ≥ 0 (0 at a class's first showing), got {int(instance.min())}")
    correct, instance = correct.detach().cpu().double(), instance.detach().cpu()
    out: dict = {"instance": [], "mean": [], "half": [], "lo": [], "hi": [], "episodes": []}
    for j in range(int(instance.max()) + 1):
        at = (instance == j).double()
        count = at.sum(1)
        has = count > 0
        stats = interval((correct * at).sum(1)[has] / count[has])
        out["instance"].append(j + 1)
        for key in ("mean", "half", "lo", "hi"):
            out[key].append(stats[key])
        out["episodes"].append(stats["n"])
    return out


def _ordinal(i: int) -> str:
    return f"{i}" + ("th" if 10 <= i % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(i % 10, "th"))


def by_instance_table(result: dict, instances: tuple[int, ...] = (1, 2, 3, 4, 5, 10)) -> str:
    """A one-row Markdown table of :func:`accuracy_by_instance`'s result at ``instances`` (the
    paper's columns), accuracy in percent ± the 95% half-width."""
    picked = [i for i in instances if i in result["instance"]]
    pos = [result["instance"].index(i) for i in picked]
    head = "| " + " | ".join(_ordinal(i) for i in picked) + " |"
    row = "| " + " | ".join(f"{100 * result['mean'][p]:.1f} ± {100 * result['half'][p]:.1f}" for p in pos) + " |"
    return "\n".join([head, "|" + " --- |" * len(picked), row])
