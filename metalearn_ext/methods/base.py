"""The method interface: what the run loop, the meta-optimizers and the CLI ask of a method.

A method is one module in ``metalearn_ext/methods/`` and one folder ``metalearn_ext/configs/<name>/``.
It declares its config sections (dataclasses), the tasks it trains on, how to build its model from
the config and the task's shapes, its differentiable meta-loss on one meta-batch, its ES fitness
where ES applies, and its evaluation protocol. Nothing in ``train/`` knows any method by name.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from metalearn_ext.config import ConfigError, check_non_negative, check_positive

__all__ = ["Batch", "Method", "TrainConfig"]


@dataclass
class TrainConfig:
    """The run loop and the meta-optimizer (the ``train:`` section; methods may subclass it)."""

    optimizer: Literal["gradient", "es"] = "gradient"
    steps: int = 1000
    seed: int = 0
    lr: float = 1e-3  # Adam's learning rate for the meta-parameters
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: from lr down to lr_final at train.steps
    lr_final: float = 0.0  # the cosine schedule's last learning rate
    meta_batch: int = 16  # tasks per meta-step (split across processes under torchrun)
    clip: float | None = None  # gradient-norm clip (None: none)
    weight_decay: float = 0.0  # decoupled weight decay (AdamW) when > 0, scaled by the learning rate
    ema: float = 0.0  # > 0: the weights are also averaged exponentially with this decay per step (Polyak);
                      # evaluation, load_run and the end-of-training check use the average; 0: off
    # ES
    population: int = 64  # members (antithetic pairs x 2)
    sigma: float = 0.05
    # run
    checkpoint_every: int = 100
    max_bad_steps: int = 5  # consecutive non-finite meta-losses before stopping
    num_threads: int | None = None  # torch intra-op threads (None: torch's default)
    progress: bool = True

    def check(self, section: str) -> None:
        check_positive(self, section, "steps", "lr", "meta_batch", "clip", "population", "sigma", "checkpoint_every",
                       "max_bad_steps", "num_threads")
        check_non_negative(self, section, "weight_decay", "ema")
        if not self.ema < 1.0:
            raise ConfigError(f"config key '{section}.ema': expected a decay in [0, 1) (0: no averaging), got "
                              f"{self.ema!r}")
        if not 0.0 <= self.lr_final <= self.lr:
            raise ConfigError(f"config key '{section}.lr_final': expected a rate in [0, lr = {self.lr}], got "
                              f"{self.lr_final!r}")
        if self.population % 2:
            raise ConfigError(f"config key '{section}.population': must be even (antithetic pairs), got "
                              f"{self.population}")

    def learning_rate(self, step: int) -> float:
        """Adam's learning rate at meta-step ``step`` (0-based): ``lr``, or with ``lr_schedule: cosine``
        lr_final + (lr − lr_final)·(1 + cos(π·step / steps)) / 2, a function of the step alone (a
        resume continues it; extending ``train.steps`` on resume stretches the rest of the curve)."""
        if self.lr_schedule == "constant":
            return self.lr
        frac = min(step / self.steps, 1.0)
        return self.lr_final + (self.lr - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass
class Batch:
    """One meta-batch as the method sees it: the task family's ``data`` for items ``indices`` of
    meta-step ``step`` of a run seeded ``seed`` (so a method can draw per-item randomness, e.g.
    initial states, from the same seeds), and ``meta_batch``, the size of the whole meta-batch
    across processes (``len(indices)`` is this process's share)."""

    data: Any
    indices: Sequence[int]
    seed: int
    step: int
    meta_batch: int


class Method(ABC):
    """Subclass, fill the class attributes, implement the abstract methods, and decorate with
    :func:`metalearn_ext.methods.register_method`."""

    name: ClassVar[str]
    description: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]  # task names (the first is the default)
    default_configs: ClassVar[dict[str, str]] = {}  # task name -> shipped config used when --config is absent
    optimizers: ClassVar[tuple[str, ...]] = ("gradient",)
    model_config: ClassVar[type]
    train_config: ClassVar[type] = TrainConfig
    eval_config: ClassVar[type]

    # ------------------------------------------------------------------ config
    def sections(self, task: str) -> dict[str, type]:
        """Section name -> dataclass, for a run on ``task``."""
        from metalearn_ext.tasks import task_config_class

        return {"model": self.model_config, "task": task_config_class(task), "train": self.train_config,
                "eval": self.eval_config}

    def check_config(self, cfg: Any) -> None:
        """Checks across sections (e.g. the optimizer is one this method supports); ConfigError naming the key."""
        if cfg.task.name not in self.tasks:
            raise ConfigError(f"config key 'task.name': {self.name} trains on {', '.join(self.tasks)}, got "
                              f"{cfg.task.name!r}")
        if cfg.train.optimizer not in self.optimizers:
            raise ConfigError(f"config key 'train.optimizer': {self.name} supports {', '.join(self.optimizers)}, "
                              f"got {cfg.train.optimizer!r}")

    # ------------------------------------------------------------------ model and meta-objective
    def build_task(self, cfg: Any):
        """The task family for meta-training (``cfg.task``)."""
        from metalearn_ext.tasks import build_task

        return build_task(cfg.task)

    @abstractmethod
    def build_model(self, cfg: Any, shapes: dict[str, Any]) -> nn.Module:
        """A fresh model for ``cfg`` and the task's ``shapes`` (parameters drawn from torch's global RNG)."""

    def prepare(self, model: nn.Module, task: Any, cfg: Any) -> None:
        """Once, before the first meta-step of a fresh run (e.g. input statistics from the data)."""

    @abstractmethod
    def meta_loss(self, model: nn.Module, batch: Batch, cfg: Any) -> Tensor | Iterable[Tensor]:
        """The differentiable meta-loss: the mean over this process's items of ``batch``.

        A method that updates the meta-parameters several times per meta-batch (truncated BPTT)
        returns an iterable instead: each element is one segment's loss, and the optimizer steps
        after each (the method may carry state from one segment into the next).
        """

    def es_fitness(self, model: nn.Module, members: Tensor, batch: Batch, cfg: Any) -> Tensor:
        """ES: fitness to minimize (2k,) of members (2k, P) = θ ± σε (interleaved pairs), pair j
        of the members seeing item ``batch.indices[j]``."""
        raise NotImplementedError(f"{self.name} has no ES fitness")

    def step_work(self, model: nn.Module, cfg: Any) -> dict[str, float]:
        """Work per meta-step for throughput figures in metrics.jsonl (``{"synapse_ticks": ...}``)."""
        return {}

    # ------------------------------------------------------------------ after training, evaluation, plots
    def after_training(self, model: nn.Module, task: Any, cfg: Any, run_dir: Path, log: Callable[[str], None]
                       ) -> None:
        """A quick held-out check at the end of a finished run (e.g. writes eval.json)."""

    @abstractmethod
    def evaluate(self, run_dir: Path, overrides: Sequence[str], *, log: Callable[[str], None], progress: bool
                 ) -> dict:
        """``metalearn eval``: the protocol on held-out tasks; writes its JSON into the run directory."""

    def format_results(self, results: dict) -> str:
        """The evaluation as a table for the terminal."""
        import json

        return json.dumps(results, indent=1)

    def plot(self, run_dir: Path, log: Callable[[str], None]) -> list[Path]:
        """``metalearn plot``: PNGs into the run directory (the training curve at least)."""
        from metalearn_ext.train.plot import plot_training

        return [plot_training(run_dir)]

    # ------------------------------------------------------------------ helpers
    def configs_dir(self) -> Path:
        """``metalearn_ext/configs/<name>/``: the shipped YAML configs."""
        return Path(__file__).resolve().parent.parent / "configs" / self.name

    def shipped_configs(self) -> list[str]:
        d = self.configs_dir()
        return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []

    def __repr__(self) -> str:
        return f"<method {self.name}: tasks {', '.join(self.tasks)}>"
