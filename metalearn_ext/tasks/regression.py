"""Function regression: task "sinusoid" (MAML) and task "gp" (CNP and its siblings).

Both draw from one distribution for every split; the split only changes the seeds' purpose, so
test functions are never the functions of any training step.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.data import GPBatch, sample_gp_curves, sample_sinusoid_tasks
from metalearn_ext.data.batch import batch_to
from metalearn_ext.tasks.base import TaskConfig, TaskFamily, draw_items, register_task, split_purpose
from metalearn_ext.tasks.seeds import generator

__all__ = ["GPTask", "GPTaskConfig", "SinusoidEpisodes", "SinusoidTask", "SinusoidTaskConfig"]

GP_X_RANGE = (-2.0, 2.0)  # memory_np.md §3


@dataclass(frozen=True)
class SinusoidEpisodes:
    """E sinusoid tasks y = A · sin(x − φ) (A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5]).

    Attributes:
        support_x, support_y: (E, K, 1) float32.
        query_x, query_y: (E, Q, 1) float32, drawn from the same sinusoid.
        amplitude, phase: (E,) A and φ.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    amplitude: Tensor
    phase: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SinusoidEpisodes:
        """The same batch with every tensor on ``device``."""
        return batch_to(self, device, non_blocking)


@dataclass
class SinusoidTaskConfig(TaskConfig):
    """Sinusoid regression (the ``task:`` section, name ``sinusoid``); the MAML paper's ranges."""

    name: str = "sinusoid"
    k_shot: int = 10  # support points per task (the paper: 5 or 10)
    n_query: int = 10  # query points per task in meta-training

    def check(self, section: str) -> None:
        check_positive(self, section, "k_shot", "n_query")


class SinusoidTask(TaskFamily):
    """Sinusoid tasks; ``sample`` -> :class:`SinusoidEpisodes`."""

    family = "regression"

    def __init__(self, cfg: SinusoidTaskConfig) -> None:
        self.cfg = cfg

    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train",
               k_shot: int | None = None, n_query: int | None = None) -> SinusoidEpisodes:
        """Tasks ``indices`` of meta-step ``step``: support (E, K, 1), query (E, Q, 1); K and Q from
        the config unless given."""
        k = self.cfg.k_shot if k_shot is None else k_shot
        q = self.cfg.n_query if n_query is None else n_query
        if k < 1 or q < 1:
            raise ValueError(f"k_shot and n_query must be ≥ 1, got {k} and {q}")

        def one(g: torch.Generator) -> SinusoidEpisodes:
            t = sample_sinusoid_tasks(1, k + q, generator=g)
            return SinusoidEpisodes(t.x[:, :k], t.y[:, :k], t.x[:, k:], t.y[:, k:], t.amplitude, t.phase)

        return draw_items(indices, seed=seed, step=step, split=split, draw=one)

    def shapes(self) -> dict[str, Any]:
        return {"x_dim": 1, "y_dim": 1, "k_shot": self.cfg.k_shot, "n_query": self.cfg.n_query}


@dataclass
class GPTaskConfig(TaskConfig):
    """1-D GP regression curves (the ``task:`` section, name ``gp``; memory_np.md §3): per curve
    n_c ~ U{min_context..max_context} context points; the targets are the context plus
    U{min_extra_target..max_extra_target} more points; x ~ U[−2, 2]. ``kernel``: ``se`` (the
    spec's), ``matern52`` or ``periodic`` (of period ``period``), at the same length scale."""

    name: str = "gp"
    min_context: int = 3
    max_context: int = 50
    min_extra_target: int = 1
    max_extra_target: int = 50
    length_scale: float = 0.4  # squared-exponential kernel
    signal_std: float = 1.0
    noise_var: float = 2e-2  # observation noise variance
    kernel: Literal["se", "matern52", "periodic"] = "se"
    period: float = 1.0  # the periodic kernel's period

    def check(self, section: str) -> None:
        check_positive(self, section, "min_context", "max_context", "length_scale", "signal_std", "period")
        for lo, hi in (("min_context", "max_context"), ("min_extra_target", "max_extra_target")):
            if not 0 <= getattr(self, lo) <= getattr(self, hi):
                raise ConfigError(f"config key '{section}.{lo}': must be in 0..{section}.{hi} "
                                  f"({getattr(self, hi)}), got {getattr(self, lo)}")
        if self.noise_var < 0:
            raise ConfigError(f"config key '{section}.noise_var': must be ≥ 0, got {self.noise_var}")


class GPTask(TaskFamily):
    """GP curves; ``sample`` -> :class:`metalearn_ext.data.GPBatch` padded to Nc = max_context
    context and Nt = max_context + max_extra_target target points, with masks."""

    family = "regression"

    def __init__(self, cfg: GPTaskConfig) -> None:
        self.cfg = cfg

    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train") -> GPBatch:
        """Curves ``indices`` of meta-step ``step``: context_x/y (E, Nc, 1), context_mask (E, Nc),
        target_x/y (E, Nt, 1), target_mask (E, Nt), num_context/num_target (E,)."""
        c = self.cfg
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("indices is empty: a meta-batch needs at least one item")
        # item i from its own seed, as draw_items would, but with one batched Cholesky for all
        purpose = split_purpose(split)
        return sample_gp_curves(len(indices), min_context=c.min_context, max_context=c.max_context,
                                min_extra_target=c.min_extra_target, max_extra_target=c.max_extra_target,
                                length_scale=c.length_scale, signal_std=c.signal_std, noise_var=c.noise_var,
                                x_range=GP_X_RANGE, kernel=c.kernel, period=c.period,
                                generators=[generator(seed, step, i, purpose) for i in indices])

    def shapes(self) -> dict[str, Any]:
        c = self.cfg
        return {"x_dim": 1, "y_dim": 1, "max_context": c.max_context, "max_target": c.max_context + c.max_extra_target}


register_task("sinusoid", "regression", SinusoidTaskConfig, SinusoidTask,
              "sinusoid regression, amplitude U[0.1, 5], phase U[0, pi], K support points (MAML)")
register_task("gp", "regression", GPTaskConfig, GPTask,
              "1-D Gaussian-process curves (SE, Matern-5/2 or periodic kernel, length 0.4), 3-50 context points "
              "(CNP, NP, ANP)")
