"""Batch-learning baselines for BLUR's protocol: SGD, SGD with momentum and Adam on a classifier per
task, scored on a held-out query batch after given numbers of learning steps.

Each of T tasks has its own classifier (parameters with a leading T) and its own learning rate, so
a whole learning-rate grid over many tasks runs as one batch: the gradient of the *sum* over tasks
of each task's mean batch loss is, per task, that task's own gradient.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metalearn_ext.evaluate.online_baselines import init_network

__all__ = ["BATCH_OPTIMIZERS", "baseline_query_accuracy"]

BATCH_OPTIMIZERS = ("sgd", "momentum", "adam")


def _forward(params: list[Tensor], x: Tensor) -> Tensor:
    """x (T, n, D) -> logits (T, n, C); hidden layers relu∘tanh (BLUR's hidden activation)."""
    h = x
    for k in range(0, len(params), 2):
        if k:
            h = torch.relu(torch.tanh(h))
        h = torch.baddbmm(params[k + 1].unsqueeze(1), h, params[k].transpose(1, 2))
    return h


def baseline_query_accuracy(inputs: Tensor, labels: Tensor, query_inputs: Tensor, query_labels: Tensor,
                            sizes: Sequence[int], *, optimizer: str, lr: Tensor | float, steps_at: Sequence[int],
                            generator: torch.Generator, momentum: float = 0.9,
                            betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Tensor:
    """Learn each task from its batches; query accuracy after each count in ``steps_at``.

    Args:
        inputs: (T, steps, batch, D) standardized inputs; labels (T, steps, batch) int64.
        query_inputs: (T, Q, D); query_labels (T, Q).
        sizes: (D, hidden…, C): [D, C] is a linear classifier.
        optimizer: "sgd", "momentum" (heavy ball, PyTorch's convention) or "adam".
        lr: a learning rate or one per task (T,).
        steps_at: increasing learning-step counts, each <= steps.
        generator: draws the initial parameters (nn.Linear's default init, fresh per task).

    Returns:
        (len(steps_at), T) query accuracy after that many steps.
    """
    if optimizer not in BATCH_OPTIMIZERS:
        raise ValueError(f"baseline_query_accuracy: optimizer must be one of {BATCH_OPTIMIZERS}, got {optimizer!r}")
    if inputs.dim() != 4 or labels.shape != inputs.shape[:3]:
        raise ValueError(f"baseline_query_accuracy: inputs must be (T, steps, batch, D) and labels (T, steps, batch), "
                         f"got {tuple(inputs.shape)} and {tuple(labels.shape)}")
    T, S = inputs.shape[:2]
    if list(steps_at) != sorted(set(steps_at)) or not 1 <= steps_at[0] or steps_at[-1] > S:
        raise ValueError(f"baseline_query_accuracy: steps_at must be increasing counts in 1..{S}, got {list(steps_at)}")
    params = init_network(T, list(sizes), generator, inputs.dtype)
    lr_t = torch.as_tensor(lr, dtype=inputs.dtype).expand(T)
    lr_of = [lr_t.view(T, *([1] * (p.dim() - 1))) for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    out = []
    for s in range(steps_at[-1]):
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]
            loss = F.cross_entropy(_forward(leaves, inputs[:, s]).transpose(1, 2), labels[:, s], reduction="none")
            grads = torch.autograd.grad(loss.mean(1).sum(), leaves)
        with torch.no_grad():
            if optimizer == "sgd":
                params = [p - a * g for p, a, g in zip(params, lr_of, grads)]
            elif optimizer == "momentum":
                m = [momentum * mi + g for mi, g in zip(m, grads)]
                params = [p - a * mi for p, a, mi in zip(params, lr_of, m)]
            else:
                b1, b2 = betas
                c1, c2 = 1 - b1 ** (s + 1), 1 - b2 ** (s + 1)
                m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
                v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
                params = [p - a * (mi / c1) / ((vi / c2).sqrt() + eps) for p, a, mi, vi in zip(params, lr_of, m, v)]
            if s + 1 in steps_at:
                out.append((_forward(params, query_inputs).argmax(-1) == query_labels).float().mean(1))
    return torch.stack(out)
