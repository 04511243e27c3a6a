"""Truncated backpropagation through time over online-learning episodes (spec §3).

Each meta-step draws ``meta_batch`` episodes (split across ranks), runs them in segments of
``truncation`` examples, and after each segment all-reduces the gradient of the mean online loss,
clips it and lets the optimizer (Adam) step; the state is carried into the next segment cut from
the graph. A segment whose loss or gradient is non-finite is skipped.
"""
from __future__ import annotations

import math

import torch

from metalearn_ext.nn import VSML
from metalearn_ext.train.common import StepResult, episodes
from metalearn_ext.train.distributed import all_reduce_sum, rank_and_world, shard
from metalearn_ext.train.tasks import TaskSource

__all__ = ["bptt_step"]


def bptt_step(model: VSML, optimizer: torch.optim.Optimizer, tasks: TaskSource, *, seed: int, step: int,
              meta_batch: int, length: int, truncation: int | None, clip: float) -> StepResult:
    """One meta-step of truncated BPTT; returns the mean online loss over all episodes."""
    rank, world = rank_and_world()
    mine = shard(meta_batch, rank, world)
    if not len(mine):
        raise ValueError(f"train.meta_batch = {meta_batch} is smaller than the number of processes ({world})")
    x, y, state = episodes(model, tasks, seed, step, mine, length)
    model.state = state
    K = truncation or length
    params = list(model.parameters())
    total, applied = 0.0, True
    for start in range(0, length, K):
        seg = slice(start, min(start + K, length))
        optimizer.zero_grad(set_to_none=False)
        _, losses = model.learn(x[:, seg], y[:, seg])
        loss = losses.sum() / (meta_batch * losses.shape[1])  # this rank's share of the global mean
        loss.backward()
        for p in params:  # e.g. layer 0's backward messenger, whose output nothing reads
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([loss.detach().reshape(1).double()] + [p.grad.reshape(-1).double() for p in params])
        all_reduce_sum(flat)
        seg_loss, offset = float(flat[0]), 1
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        total += seg_loss * losses.shape[1] / length
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if math.isfinite(seg_loss) and math.isfinite(float(grad_norm)):
            optimizer.step()
        else:
            applied = False
        model.detach_state()
    model.reset_state()
    ticks = model.synapse_ticks_per_example() * meta_batch * length
    return StepResult(total if applied else float("nan"), applied, ticks)
