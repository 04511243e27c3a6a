"""Regression after k gradient steps (MAML's sinusoid protocol) and its non-meta-learned baseline.

``regression_mse`` scores any ``predict(support_x, support_y, query_x, steps=k) -> (E, Q, 1)`` on
held-out tasks after 0, 1, 10 … adaptation steps on K support points. ``pretrain_baseline`` is
the MAML paper's "pretrained" comparison: one network trained by Adam on the pooled points of
many tasks (no meta-learning), then fine-tuned per task by plain SGD on the support set.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from metalearn_ext.evaluate.held_out import check_counts, held_out_batches
from metalearn_ext.evaluate.stats import interval
from metalearn_ext.tasks.seeds import BASELINE_INIT, derive_seed

__all__ = ["FineTuned", "RegressionPredict", "fine_tune_predict", "pretrain_baseline", "regression_mse"]

# support_x (E, K, 1), support_y (E, K, 1), query_x (E, Q, 1), steps=k -> predictions (E, Q, 1)
RegressionPredict = Callable[..., Tensor]


def regression_mse(
    predict: RegressionPredict,
    task: Any,
    *,
    steps: Sequence[int] = (0, 1, 10),
    tasks: int = 1000,
    k_shot: int = 10,
    n_query: int = 100,
    seed: int = 0,
    batch_size: int = 100,
    split: str = "test",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict:
    """Query MSE of ``predict`` after each number of adaptation steps in ``steps``, on ``tasks``
    held-out tasks of ``task`` (``task.sample(indices, seed=, step=, split=, k_shot=, n_query=)``
    with ``support_x``/``support_y``/``query_x``/``query_y`` (E, ·, 1), e.g. task "sinusoid").

    Every step count sees the same tasks (indices 0 … tasks−1 of step 0 under the seed
    ``(seed, EVAL)``, whatever ``batch_size``). ``predict`` runs under ``torch.no_grad()``; one
    that adapts by gradients enables them itself (or uses ``torch.func``, which ignores it).

    Returns:
        ``{"steps": [k…], "mean": [...], "half": [...], "lo": [...], "hi": [...], "tasks", "k_shot",
        "n_query"}``: per step count, the mean over tasks of each task's query MSE and its 95%
        interval.
    """
    steps = [int(k) for k in steps]
    if not steps or any(k < 0 for k in steps):
        raise ValueError(f"regression_mse: steps must be non-negative step counts, got {steps}")
    check_counts("regression_mse", tasks=tasks, k_shot=k_shot, n_query=n_query, batch_size=batch_size)
    mse: dict[int, list[Tensor]] = {k: [] for k in steps}
    with torch.no_grad():
        for _, batch in held_out_batches(task, tasks, seed=seed, batch_size=batch_size, split=split, device=device,
                                         progress=progress, desc="regression", unit="task", k_shot=k_shot,
                                         n_query=n_query):
            for k in steps:
                pred = predict(batch.support_x, batch.support_y, batch.query_x, steps=k)
                if not isinstance(pred, Tensor) or pred.shape != batch.query_y.shape:
                    got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
                    raise ValueError(f"predict(..., steps={k}) must return {tuple(batch.query_y.shape)} (E, Q, 1), "
                                     f"got {got}")
                mse[k].append((pred.double() - batch.query_y.double()).pow(2).flatten(1).mean(1).cpu())
    stats = [interval(torch.cat(mse[k])) for k in steps]
    out: dict[str, Any] = {"steps": steps}
    for key in ("mean", "half", "lo", "hi"):
        out[key] = [s[key] for s in stats]
    return {**out, "tasks": tasks, "k_shot": k_shot, "n_query": n_query}


def fine_tune_predict(module: nn.Module, support_x: Tensor, support_y: Tensor, query_x: Tensor, *, steps: int,
                      lr: float) -> Tensor:
    """Predictions (E, Q, D_y) on query_x (E, Q, D_x) of ``module`` after ``steps`` plain SGD steps
    of size ``lr`` on each task's support MSE (support_x (E, K, D_x), support_y (E, K, D_y)).

    Functional (``torch.func``: ``functional_call`` + ``grad``, ``vmap`` over the E tasks): the
    module and its parameters are left untouched, nothing is copied.
    """
    params = {n: p.detach() for n, p in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def support_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(functional_call(module, (p, buffers), (x,)), y)

    def adapt_and_predict(x: Tensor, y: Tensor, qx: Tensor) -> Tensor:
        p = params
        for _ in range(steps):
            g = grad(support_loss)(p, x, y)
            p = {n: p[n] - lr * g[n] for n in p}
        return functional_call(module, (p, buffers), (qx,))

    return vmap(adapt_and_predict)(support_x, support_y, query_x)


class FineTuned:
    """The few-shot regression interface for a plain network: ``__call__(support_x, support_y,
    query_x, steps=k)`` fine-tunes by :func:`fine_tune_predict` with step size ``inner_lr``."""

    def __init__(self, module: nn.Module, inner_lr: float = 0.01) -> None:
        self.module, self.inner_lr = module, inner_lr

    def __call__(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, steps: int = 1) -> Tensor:
        return fine_tune_predict(self.module, support_x, support_y, query_x, steps=steps, lr=self.inner_lr)


def pretrain_baseline(
    module_factory: Callable[[], nn.Module],
    task: Any,
    *,
    iterations: int,
    lr: float = 1e-3,
    tasks_per_step: int = 25,
    inner_lr: float = 0.01,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> FineTuned:
    """Train ``module_factory()`` (e.g. the 1→40→40→1 MLP) by Adam at ``lr`` on the MSE of all the
    support and query points of ``tasks_per_step`` training tasks of ``task`` per iteration (the
    tasks of meta-step i of a run seeded ``seed``), for ``iterations`` iterations — regression on
    the pooled data, no meta-learning. Its parameters are initialized from ``(seed, BASELINE_INIT)``
    without touching torch's global RNG.

    Returns:
        :class:`FineTuned` around the trained module: the same protocol (``regression_mse``)
        scores it after k plain SGD steps of size ``inner_lr`` (0.01 in the MAML paper).
    """
    check_counts("pretrain_baseline", iterations=iterations)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, BASELINE_INIT))
        module = module_factory()
    if device is not None:
        module = module.to(device)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    for it in tqdm(range(iterations), desc="pretrain", disable=not progress):
        b = task.sample(range(tasks_per_step), seed=seed, step=it, split="train")
        x = torch.cat([b.support_x, b.query_x], 1).flatten(0, 1)  # (E·(K+Q), 1): pooled, task identity dropped
        y = torch.cat([b.support_y, b.query_y], 1).flatten(0, 1)
        if device is not None:
            x, y = x.to(device), y.to(device)
        loss = F.mse_loss(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return FineTuned(module.eval(), inner_lr)
