"""Evolution strategies with antithetic pairs, the whole population run as one batch (spec §3).

Member 2i is θ + σε_i, member 2i+1 is θ − σε_i; both see the same episode (stream and initial
state), so their fitness difference measures ε_i alone. The population is one batch of T copies
with per-copy parameters (T, P): one ``vsml_step`` call per layer per tick. ε_i is regenerated from
its seed wherever it is needed and never stored or sent; ranks exchange only fitness values.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from metalearn_ext.nn import VSML
from metalearn_ext.train.common import StepResult, episodes
from metalearn_ext.train.distributed import all_reduce_sum, rank_and_world, shard
from metalearn_ext.train.tasks import NOISE, TaskSource, generator

__all__ = ["apply_gradient", "es_gradient", "es_noise", "es_step"]


def es_noise(num_params: int, seed: int, step: int, indices: range) -> torch.Tensor:
    """ε_i (len(indices), P) float32, each row from its own seed."""
    rows = [torch.randn(num_params, generator=generator(seed, step, i, NOISE)) for i in indices]
    return torch.stack(rows) if rows else torch.zeros(0, num_params)


def es_gradient(theta: torch.Tensor, fitness: Callable[[torch.Tensor, range], torch.Tensor], *, seed: int,
                step: int, pairs: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Antithetic ES estimate of ∇ E[f(θ + σε)] (to be minimized), split across ranks.

    Args:
        theta: (P,) current parameters.
        fitness: ``fitness(members (2k, P), pair_indices)`` -> (2k,) values to minimize for
            members θ + σε_i, θ − σε_i (interleaved) of this rank's pairs.
        seed, step: ε_i is drawn from the seed derived from (seed, step, i).

    Returns:
        (grad (P,) float64 = Σ_i ε_i (f⁺_i − f⁻_i) / (2σ · pairs), table (pairs, 2) float64 of every
        rank's fitness values). The result is the same whichever way the pairs are split.
    """
    rank, world = rank_and_world()
    mine = shard(pairs, rank, world)
    P = theta.numel()
    table = torch.zeros(pairs, 2, dtype=torch.float64)
    if len(mine):
        eps = es_noise(P, seed, step, mine).to(theta)
        members = torch.stack([theta + sigma * eps, theta - sigma * eps], 1).reshape(-1, P)  # (2k, P)
        table[mine.start : mine.stop] = fitness(members, mine).double().view(-1, 2)
    all_reduce_sum(table)
    if not torch.isfinite(table).all():
        return torch.full((P,), float("nan"), dtype=torch.float64), table
    eps_all = es_noise(P, seed, step, range(pairs)).double()
    return eps_all.T @ (table[:, 0] - table[:, 1]) / (2 * sigma * pairs), table


def es_step(model: VSML, optimizer: torch.optim.Optimizer, tasks: TaskSource, *, seed: int, step: int,
            population: int, sigma: float, length: int) -> StepResult:
    """One ES meta-step on VSML: fitness = mean online loss of each member over its episode (the
    two members of a pair share the episode); Adam applies the :func:`es_gradient` estimate.
    Skipped (parameters untouched) if any fitness is non-finite."""

    def fitness(members: torch.Tensor, pair_indices: range) -> torch.Tensor:
        x, y, state = episodes(model, tasks, seed, step, pair_indices, length)
        model.state = state.repeat_interleave(2)
        try:
            with torch.no_grad():
                _, losses = model.learn(x.repeat_interleave(2, 0), y.repeat_interleave(2, 0), params=members)
        finally:
            model.reset_state()
        return losses.mean(1)

    theta = model.parameter_vector().detach()
    grad, table = es_gradient(theta, fitness, seed=seed, step=step, pairs=population // 2, sigma=sigma)
    meta_loss = float(table.mean())
    ticks = model.synapse_ticks_per_example() * population * length
    if not math.isfinite(meta_loss):
        return StepResult(float("nan"), False, ticks)
    apply_gradient(model, optimizer, grad)
    return StepResult(meta_loss, True, ticks)


def apply_gradient(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad: torch.Tensor) -> None:
    """Write the flat gradient (P,) into the parameters' .grad and step the optimizer."""
    offset = 0
    for p in model.parameters():
        p.grad = grad[offset : offset + p.numel()].view_as(p).to(p).clone()
        offset += p.numel()
    optimizer.step()
