"""Predictive log-likelihood per target point against the exact GP posterior (the oracle).

On curves drawn from the task's GP no model can beat the oracle in expectation, so the gap
oracle − model (nats per target point, ≥ 0 up to noise) is the yardstick for CNP and its
siblings (memory_np.md §3).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal

from metalearn_ext.data import gp_oracle_log_prob
from metalearn_ext.evaluate.held_out import check_counts, held_out_batches
from metalearn_ext.evaluate.stats import interval, paired_interval

__all__ = ["NPPredict", "log_likelihood_vs_oracle"]

# x_context (B, Nc, 1), y_context (B, Nc, 1), x_target (B, Nt, 1), context_mask (B, Nc) bool
#   -> Normal with mean and scale (B, Nt, 1)
NPPredict = Callable[[Tensor, Tensor, Tensor, Tensor], Normal]


def log_likelihood_vs_oracle(
    predict: NPPredict,
    task: Any,
    *,
    curves: int = 4096,
    seed: int = 0,
    batch_size: int = 256,
    split: str = "test",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict:
    """Mean log-likelihood per target point of ``predict``'s predictive distributions and of the
    exact GP posterior, on ``curves`` curves of ``task`` (task "gp":
    ``task.sample(indices, seed=, step=, split=) -> GPBatch``).

    A curve's score is the mean over its targets (which include its context points) of
    log p(y_t | context); the intervals are over curves, and the gap's interval is paired (the
    same curves scored twice). Curves are indices 0 … curves−1 of step 0 under the seed
    ``(seed, EVAL)``, whatever ``batch_size``. ``predict`` runs under ``torch.no_grad()``.

    Returns:
        ``{"model": interval, "oracle": interval, "gap": interval, "curves": n, "by_context_size":
        {n_c: {"model", "oracle", "gap", "curves"}}}`` — intervals as
        :func:`metalearn_ext.evaluate.stats.interval`, in nats per target point; gap = oracle − model.
    """
    check_counts("log_likelihood_vs_oracle", curves=curves, batch_size=batch_size)
    model_ll, oracle_ll, sizes = [], [], []
    with torch.no_grad():
        for batch, on in held_out_batches(task, curves, seed=seed, batch_size=batch_size, split=split, device=device,
                                          progress=progress, desc="log-likelihood", unit="curve"):
            dist = predict(on.context_x, on.context_y, on.target_x, on.context_mask)
            if not isinstance(dist, Normal) or dist.mean.shape != on.target_y.shape:
                got = tuple(dist.mean.shape) if isinstance(dist, Normal) else type(dist).__name__
                raise ValueError(f"predict must return a torch.distributions.Normal of shape "
                                 f"{tuple(on.target_y.shape)} (B, Nt, 1), got {got}")
            lp = dist.log_prob(on.target_y).sum(-1).double().cpu()  # (B, Nt): joint over y's dimensions
            lp = torch.where(batch.target_mask, lp, 0.0)  # padded targets may score NaN; they count for nothing
            n_t = batch.num_target.double()
            model_ll.append(lp.sum(1) / n_t)
            oracle_ll.append(gp_oracle_log_prob(batch).sum(1) / n_t)
            sizes.append(batch.num_context)
    model, oracle, n_c = torch.cat(model_ll), torch.cat(oracle_ll), torch.cat(sizes)
    by_size = {}
    for c in n_c.unique().tolist():
        m = n_c == c
        by_size[int(c)] = {"model": float(model[m].mean()), "oracle": float(oracle[m].mean()),
                           "gap": float((oracle[m] - model[m]).mean()), "curves": int(m.sum())}
    return {"model": interval(model), "oracle": interval(oracle), "gap": paired_interval(oracle, model),
            "curves": curves, "by_context_size": by_size}
