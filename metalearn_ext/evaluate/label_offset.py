"""Accuracy by instance on held-out label-offset episodes, for every model that answers the online
interface ``learn(inputs, labels) -> (logits, ...)`` (MANN, its LSTM baseline).

Episodes are drawn as :mod:`metalearn_ext.evaluate.held_out` says: never a training draw, the same
whatever ``batch_size`` is, so two models evaluated with the same seed see the same episodes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from metalearn_ext.evaluate.by_instance import accuracy_by_instance
from metalearn_ext.evaluate.held_out import check_counts, held_out_batches

__all__ = ["label_offset_accuracy"]

# inputs (E, L, D), labels (E, L) int64 -> (logits (E, L, C), anything)
OnlineLearn = Callable[[Tensor, Tensor], tuple]


def label_offset_accuracy(learn: OnlineLearn, task: Any, *, episodes: int = 1000, seed: int = 0,
                          batch_size: int = 100, split: str = "test", device: torch.device | str | None = None,
                          progress: bool = False) -> dict:
    """Accuracy by instance of ``learn`` on ``episodes`` episodes of a label-offset ``task``.

    ``learn`` gets the images only, inputs (E, L, D) with D = the task's ``image_dim`` (the label
    one-hot of the batch's inputs is dropped: the model shifts ``labels`` (E, L) itself), under
    ``torch.no_grad()``; the prediction at step s is its logits' argmax.

    Returns:
        :func:`metalearn_ext.evaluate.by_instance.accuracy_by_instance`'s dict, plus ``episodes``
        (the count), ``loss`` (mean per-step cross-entropy) and ``n_way``.

    Raises:
        ValueError: bad counts, or logits not shaped (E, L, C).
    """
    check_counts("label_offset_accuracy", episodes=episodes, batch_size=batch_size)
    d = task.shapes()["image_dim"]
    correct, instance, losses = [], [], []
    with torch.no_grad():
        for _, b in held_out_batches(task, episodes, seed=seed, batch_size=batch_size, split=split, device=device,
                                     progress=progress, desc="by instance", unit="episode"):
            logits = learn(b.inputs[..., :d], b.labels)[0]
            e, length = b.labels.shape
            if not isinstance(logits, Tensor) or logits.dim() != 3 or tuple(logits.shape[:2]) != (e, length):
                got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"learn must return logits (E, L, C) = ({e}, {length}, C), got {got}")
            correct.append((logits.argmax(-1) == b.labels).cpu())
            instance.append(b.instance.cpu())
            losses.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), b.labels).cpu() * e)
    out = accuracy_by_instance(torch.cat(correct), torch.cat(instance))
    out.update(episodes=episodes, loss=float(sum(losses)) / episodes, n_way=int(logits.shape[-1]))
    return out
