"""Online accuracy of a VSML network on held-out streams (no gradients, no parameter change)."""
from __future__ import annotations

import torch

from metalearn_ext.nn import VSML
from metalearn_ext.train.common import episodes
from metalearn_ext.train.tasks import TaskSource

__all__ = ["evaluate_online"]

EVAL_STEP = -1  # seeds of evaluation episodes never coincide with a meta-training step's


def evaluate_online(model: VSML, tasks: TaskSource, *, streams: int, length: int, seed: int) -> dict:
    """Run ``streams`` fresh episodes of ``length`` examples; accuracy is of the prediction made
    before each label was seen.

    Returns a dict: ``curve`` (L,) accuracy per position averaged over streams, ``acc_first``,
    ``acc_all``, ``acc_last`` (first quarter / all / last quarter of the episode), ``loss``
    (mean online loss), ``chance`` (1 / classes).
    """
    x, y, state = episodes(model, tasks, seed, EVAL_STEP, range(streams), length)
    saved = model.state
    model.state = state
    try:
        with torch.no_grad():
            logits, losses = model.learn(x, y)
    finally:
        model.state = saved
    correct = (logits.argmax(-1) == y).float()  # (T, L)
    q = max(1, length // 4)
    return {
        "curve": correct.mean(0).tolist(),
        "acc_first": float(correct[:, :q].mean()),
        "acc_all": float(correct.mean()),
        "acc_last": float(correct[:, -q:].mean()),
        "loss": float(losses.mean()),
        "chance": 1.0 / model.num_classes,
    }
