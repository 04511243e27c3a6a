"""The ES meta-optimizer: evolution strategies with antithetic pairs (VSML spec §3), for any
method with an ES fitness.

Member 2i is θ + σε_i, member 2i+1 is θ − σε_i; both see the same task item, so their fitness
difference measures ε_i alone. A method evaluates its members as one batch where it can (VSML: T
copies with per-copy parameters, one kernel call per layer per tick). ε_i is regenerated from its
seed wherever it is needed and never stored or sent; processes exchange only fitness values.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from metalearn_ext.tasks.seeds import NOISE, generator
from metalearn_ext.train.distributed import all_reduce_sum, rank_and_world, shard
from metalearn_ext.train.step import StepResult, draw_batch

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


def es_step(method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, task, cfg, step: int) -> StepResult:
    """One ES meta-step: fitness of each member from ``method.es_fitness`` (the two members of a pair
    share their task item); Adam applies the :func:`es_gradient` estimate. Skipped (parameters
    untouched) if any fitness is non-finite."""
    t = cfg.train
    pairs = t.population // 2

    def fitness(members: torch.Tensor, pair_indices: range) -> torch.Tensor:
        batch = draw_batch(task, pair_indices, seed=t.seed, step=step, meta_batch=pairs)
        with torch.no_grad():
            return method.es_fitness(model, members, batch, cfg)

    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    grad, table = es_gradient(theta, fitness, seed=t.seed, step=step, pairs=pairs, sigma=t.sigma)
    meta_loss = float(table.mean())
    work = method.step_work(model, cfg)
    if not math.isfinite(meta_loss):
        return StepResult(float("nan"), False, work)
    apply_gradient(model, optimizer, grad)
    return StepResult(meta_loss, True, work)


def apply_gradient(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad: torch.Tensor) -> None:
    """Write the flat gradient (P,) into the parameters' .grad and step the optimizer."""
    offset = 0
    for p in model.parameters():
        p.grad = grad[offset : offset + p.numel()].view_as(p).to(p).clone()
        offset += p.numel()
    optimizer.step()
