"""The gradient meta-optimizer: backpropagation of the method's meta-loss through its inner loop
(BPTT for VSML, second-order MAML, …), the meta-batch split across processes.

Each process draws its share of the meta-batch by index, backpropagates its share of the mean
meta-loss, and the gradients are summed over processes (one all-reduce of a flat float64
vector), clipped and applied by the optimizer. A method that returns several segment losses
(truncated BPTT) gets an update after each. A non-finite loss or gradient skips the update.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from metalearn_ext.train.distributed import all_reduce_sum, rank_and_world, shard
from metalearn_ext.train.step import StepResult, draw_batch

__all__ = ["gradient_step"]


def _segments(losses):
    """(loss, weight) pairs from a Tensor, or an iterable of Tensors or (Tensor, weight) pairs."""
    if isinstance(losses, Tensor):
        yield losses, 1.0
        return
    for item in losses:
        yield item if isinstance(item, tuple) else (item, 1.0)


def gradient_step(method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, task, cfg, step: int
                  ) -> StepResult:
    """One meta-step: returns the meta-loss averaged over every process's items (and segments)."""
    t = cfg.train
    rank, world = rank_and_world()
    mine = shard(t.meta_batch, rank, world)
    if not len(mine):
        raise ValueError(f"train.meta_batch = {t.meta_batch} is smaller than the number of processes ({world})")
    batch = draw_batch(task, mine, seed=t.seed, step=step, meta_batch=t.meta_batch)
    share = len(mine) / t.meta_batch
    params = [p for p in model.parameters() if p.requires_grad]
    total = weights = 0.0
    applied = True
    for loss, weight in _segments(method.meta_loss(model, batch, cfg)):
        optimizer.zero_grad(set_to_none=False)
        loss = loss * share if world > 1 else loss  # this process's share of the global mean
        loss.backward()
        for p in params:  # a parameter nothing read this segment (e.g. VSML layer 0's backward messenger)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if world > 1:
            flat = torch.cat([loss.detach().reshape(1).double()] + [p.grad.reshape(-1).double() for p in params])
            all_reduce_sum(flat)
            seg_loss, offset = float(flat[0]), 1
            for p in params:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        else:
            seg_loss = float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.clip if t.clip is not None else math.inf)
        if math.isfinite(seg_loss) and math.isfinite(float(grad_norm)):
            optimizer.step()
        else:
            applied = False
        total += seg_loss * weight
        weights += weight
    return StepResult(total / weights if applied else float("nan"), applied, method.step_work(model, cfg))
