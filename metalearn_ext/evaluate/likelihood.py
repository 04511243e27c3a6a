"""Predictive log-likelihood per target point, against the exact GP posterior (the oracle) where
there is one.

On curves drawn from the task's GP no model can beat the oracle in expectation at new inputs,
so the gap oracle − model (nats per target point, ≥ 0 up to noise) is the yardstick for CNP and
its siblings (memory_np.md §3). The spec's targets include the context points, though, and there
the target is the very observation the model was given: the oracle scores it as a fresh noisy
draw, a model may predict it more tightly and beat the oracle on those points. So the results
hold both: every target (the spec's figure) and the extra targets alone (where the bound holds). Tasks without an oracle (image completion, sinusoids) get the
model's log-likelihood alone, split the same way by context size.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Normal

from metalearn_ext.data import gp_oracle_log_prob
from metalearn_ext.evaluate.held_out import check_counts, held_out_batches
from metalearn_ext.evaluate.stats import interval, paired_interval

__all__ = ["NPPredict", "log_likelihood_vs_oracle", "predictive_log_likelihood", "predictive_log_prob"]

# x_context (B, Nc, d_x), y_context (B, Nc, d_y), x_target (B, Nt, d_x), context_mask (B, Nc) bool
#   -> Normal with mean and scale (B, Nt, d_y), or (S, B, Nt, d_y): an equal-weight mixture over S
NPPredict = Callable[[Tensor, Tensor, Tensor, Tensor], Normal]


def predictive_log_prob(dist: Normal, target_y: Tensor) -> Tensor:
    """log p(y_t) per target (B, Nt), joint over y's dimensions, of a Normal (B, Nt, d_y) or of the
    equal-weight mixture over the leading dim of a Normal (S, B, Nt, d_y) (log-mean-exp over s).

    Raises:
        ValueError: ``dist`` is not a Normal of either shape.
    """
    shape = tuple(target_y.shape)
    if not isinstance(dist, Normal) or tuple(dist.mean.shape[-3:]) != shape or dist.mean.dim() not in (3, 4):
        got = tuple(dist.mean.shape) if isinstance(dist, Normal) else type(dist).__name__
        raise ValueError(f"predict must return a torch.distributions.Normal of shape {shape} (B, Nt, d_y) or "
                         f"(S, {', '.join(map(str, shape))}) (a mixture over S), got {got}")
    lp = dist.log_prob(target_y).sum(-1)
    return lp if lp.dim() == 2 else torch.logsumexp(lp, 0) - math.log(lp.shape[0])


def predictive_log_likelihood(
    predict: NPPredict,
    task: Any,
    *,
    curves: int = 4096,
    seed: int = 0,
    batch_size: int = 256,
    split: str = "test",
    device: torch.device | str | None = None,
    progress: bool = False,
    oracle: Callable[[Any], Tensor] | None = None,
) -> dict:
    """Mean log-likelihood per target point of ``predict``'s predictive distributions on ``curves``
    held-out items of ``task`` (``task.sample(indices, seed=, step=, split=)`` -> a batch with
    context_x/y, context_mask, target_x/y, target_mask, num_context, num_target: GPBatch,
    :class:`metalearn_ext.tasks.context_target.ContextTargetBatch`), and of ``oracle(batch) ->
    (B, Nt)`` log-densities where given.

    A curve's score is the mean over its targets (which include its context points) of
    log p(y_t | context); the intervals are over curves, and the gap's interval is paired (the
    same curves scored twice). Curves are indices 0 … curves−1 of step 0 under the seed
    ``(seed, EVAL)``, whatever ``batch_size``. ``predict`` runs under ``torch.no_grad()``.

    Returns:
        ``{"model": interval, "curves": n, "by_context_size": {n_c: {"model", "curves"}}, "extra":
        {"model", "curves"}}`` — intervals as :func:`metalearn_ext.evaluate.stats.interval`, in nats
        per target point; ``extra`` scores the extra (non-context) targets alone, over the curves
        that have any. With an oracle also ``"oracle"`` and ``"gap"`` (= oracle − model) overall, in
        ``extra`` and per context size (``"gap_extra"`` there too).
    """
    check_counts("predictive_log_likelihood", curves=curves, batch_size=batch_size)
    model_ll, oracle_ll, model_extra, oracle_extra, sizes = [], [], [], [], []
    with torch.no_grad():
        for batch, on in held_out_batches(task, curves, seed=seed, batch_size=batch_size, split=split, device=device,
                                          progress=progress, desc="log-likelihood", unit="curve"):
            lp = predictive_log_prob(predict(on.context_x, on.context_y, on.target_x, on.context_mask),
                                     on.target_y).double().cpu()
            lp = torch.where(batch.target_mask, lp, 0.0)  # padded targets may score NaN; they count for nothing
            n_t = batch.num_target.double()
            # the targets after the first num_context are the extra (non-context) ones
            extra = torch.arange(lp.shape[1])[None, :] >= batch.num_context[:, None].cpu()
            n_e = (batch.num_target - batch.num_context).double()
            model_ll.append(lp.sum(1) / n_t)
            model_extra.append((lp * extra).sum(1) / n_e)
            if oracle is not None:
                olp = oracle(batch)
                oracle_ll.append(olp.sum(1) / n_t)
                oracle_extra.append((olp * extra).sum(1) / n_e)
            sizes.append(batch.num_context)
    model, n_c = torch.cat(model_ll), torch.cat(sizes)
    orc = torch.cat(oracle_ll) if oracle is not None else None
    mex = torch.cat(model_extra)
    oex = torch.cat(oracle_extra) if oracle is not None else None
    has_extra = torch.isfinite(mex)  # curves without extra targets score 0/0
    by_size = {}
    for c in n_c.unique().tolist():
        m = n_c == c
        row = {"model": float(model[m].mean()), "curves": int(m.sum())}
        if orc is not None:
            row.update(oracle=float(orc[m].mean()), gap=float((orc[m] - model[m]).mean()))
            e = m & has_extra
            if e.any():
                row["gap_extra"] = float((oex[e] - mex[e]).mean())
        by_size[int(c)] = row
    out = {"model": interval(model), "curves": curves, "by_context_size": by_size}
    if orc is not None:
        out.update(oracle=interval(orc), gap=paired_interval(orc, model))
    if has_extra.any():
        out["extra"] = {"model": interval(mex[has_extra]), "curves": int(has_extra.sum())}
        if oex is not None:
            out["extra"].update(oracle=interval(oex[has_extra]), gap=paired_interval(oex[has_extra], mex[has_extra]))
    return out


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
    """:func:`predictive_log_likelihood` on GP curves (task "gp": ``task.sample(...) -> GPBatch``)
    beside the exact GP posterior of the kernel the curves were drawn from.

    Returns:
        ``{"model": interval, "oracle": interval, "gap": interval, "curves": n, "extra": {"model",
        "oracle", "gap", "curves"}, "by_context_size": {n_c: {"model", "oracle", "gap", "gap_extra",
        "curves"}}}`` in nats per target point; gap = oracle − model (see the module docstring for
        why ``extra`` is the one the oracle bounds).
    """
    return predictive_log_likelihood(predict, task, curves=curves, seed=seed, batch_size=batch_size, split=split,
                                     device=device, progress=progress, oracle=gp_oracle_log_prob)
