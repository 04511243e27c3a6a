"""BLUR (Sandler et al. 2021): a genome of a learning rule meta-trained by gradient through the unroll
(optionally truncated, with an unroll-length curriculum) or by ES, on classification tasks learned
in batches; evaluated by query accuracy after 1…100 steps beside tuned SGD / momentum / Adam."""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from metalearn_ext.config import ConfigError, check_non_negative, check_positive
from metalearn_ext.methods import register_method
from metalearn_ext.methods.base import Batch, Method, TrainConfig
from metalearn_ext.nn import BLUR
from metalearn_ext.tasks.seeds import STATE, generator

__all__ = ["BLUREvalConfig", "BLURMethod", "BLURModelConfig", "BLURTrainConfig", "item_generators", "unroll_length"]

Activation = Literal["relu_tanh", "tanh", "identity"]


@dataclass
class BLURModelConfig:
    """The ``model:`` section: ``hidden`` (sizes between the data's D and C) and :class:`BLUR`'s keywords."""

    hidden: list[int] = field(default_factory=lambda: [20])
    states: int = 2
    per_layer_genome: bool = False
    normalize: bool = True
    oja: bool = False
    label_encoding: Literal["one_hot", "pm1"] = "one_hot"
    hidden_activation: Activation = "relu_tanh"
    output_activation: Activation = "tanh"
    init_scale: float = 1.0
    learn_init_scale: bool = False
    tie_channels: bool = False
    genome_init: Literal["backprop", "random"] = "backprop"
    genome_lr: float = 0.05
    genome_noise: float = 0.1
    logit_scale: float = 5.0
    backend: Literal["reference", "cpp", "cuda", "triton"] | None = None
    fused: bool | None = None  # one blur_step call per learning step (None: where its cpp kernel can run)

    def check(self, section: str) -> None:
        check_positive(self, section, "init_scale", "logit_scale")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"config key '{section}.hidden': sizes must be >= 1, got {self.hidden}")
        if self.states < 2:
            raise ConfigError(f"config key '{section}.states': must be >= 2 (the label goes into state 1), got "
                              f"{self.states}")


@dataclass
class BLURTrainConfig(TrainConfig):
    """BLUR's ``train:`` section: the shared run loop plus the unroll, its curriculum and truncation."""

    lr: float = 1e-3
    meta_batch: int = 8  # tasks per meta-step (T)
    clip: float | None = 10.0
    unroll: int = 10  # learning steps per task at the start (U)
    unroll_increment: int = 0  # curriculum: U grows by this ...
    unroll_every: int = 1000  # ... every this many meta-steps ...
    unroll_max: int | None = None  # ... up to this (None: task.steps)
    truncation: int | None = None  # steps per truncated segment: query loss and an update after each
    query_loss_at: Literal["end", "every_step"] = "end"  # the query loss after the unroll, or its mean
    # after every learning step (weighs early learning as much as late: the paper's claim is about <= 50 steps)
    eval_tasks: int = 64  # held-out tasks checked at the end of training (eval.json); 0: none

    def check(self, section: str) -> None:
        super().check(section)
        check_positive(self, section, "unroll", "unroll_every", "unroll_max", "truncation")
        check_non_negative(self, section, "unroll_increment", "eval_tasks")


@dataclass
class BLUREvalConfig:
    """``metalearn eval``: query accuracy after ``steps`` learning steps on held-out tasks."""

    steps: list[int] = field(default_factory=lambda: [1, 5, 10, 25, 50, 100])
    tasks: int = 128  # held-out tasks per task set (the 95% intervals are over these)
    tune_tasks: int = 64  # meta-training tasks on which the baselines' learning rates are chosen
    query: int = 100  # query examples per task
    lr_grid: list[float] = field(default_factory=lambda: [10 ** (k / 2) for k in range(-6, 3)])  # 1e-3 .. 10
    momentum: float = 0.9
    unseen_dataset: Literal["mnist", "fashion-mnist"] | None = "fashion-mnist"  # None: skip
    unseen_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    unseen_root: str | None = None  # directory searched first for its files (else $METALEARN_DATA, ...)

    def check(self, section: str) -> None:
        check_positive(self, section, "tune_tasks", "query")
        if self.tasks < 2:
            raise ConfigError(f"config key '{section}.tasks': must be >= 2 (intervals over tasks), got {self.tasks}")
        if not self.steps or self.steps != sorted(set(self.steps)) or self.steps[0] < 1:
            raise ConfigError(f"config key '{section}.steps': must be increasing positive counts, got {self.steps}")
        if not self.lr_grid or min(self.lr_grid) <= 0:
            raise ConfigError(f"config key '{section}.lr_grid': must be positive learning rates, got {self.lr_grid}")


def unroll_length(t: BLURTrainConfig, step: int, steps_available: int) -> int:
    """U at meta-step ``step``: ``unroll`` + ``unroll_increment`` per ``unroll_every`` steps, capped."""
    cap = t.unroll_max or steps_available
    return min(t.unroll + t.unroll_increment * (step // t.unroll_every), cap)


def item_generators(seed: int, step: int, indices: Sequence[int], repeat: int = 1) -> list[torch.Generator]:
    """One generator per copy for the initial synapses: item i's from (seed, step, i, STATE), each
    repeated ``repeat`` times (ES: both members of a pair start from the same synapses)."""
    return [generator(seed, step, int(i), STATE) for i in indices for _ in range(repeat)]


def query_loss(model: BLUR, weights: list[Tensor], query_x: Tensor, query_y: Tensor, params=None) -> Tensor:
    """Cross-entropy (T,) of the forward pass on each task's query batch (T, Q, D) / (T, Q)."""
    logits = model.predict(query_x, weights, params)
    return F.cross_entropy(logits.transpose(1, 2), query_y, reduction="none").mean(1)


@register_method
class BLURMethod(Method):
    name = "blur"
    description = "BLUR: a meta-learned bidirectional learning rule of k-state neurons; gradient or ES"
    tasks = ("batch_tasks",)
    optimizers = ("gradient", "es")
    model_config = BLURModelConfig
    train_config = BLURTrainConfig
    eval_config = BLUREvalConfig

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        t = cfg.train
        if t.unroll > cfg.task.steps or (t.unroll_max or 0) > cfg.task.steps:
            raise ConfigError(f"config key 'task.steps': tasks of {cfg.task.steps} learning batches are shorter than "
                              f"train.unroll = {t.unroll} / train.unroll_max = {t.unroll_max}")

    def build_model(self, cfg, shapes: dict) -> BLUR:
        kwargs = dataclasses.asdict(cfg.model)
        hidden = kwargs.pop("hidden")
        return BLUR([shapes["input_dim"], *hidden, shapes["num_classes"]], **kwargs)

    def prepare(self, model: BLUR, task, cfg) -> None:
        model.set_input_stats(*task.train.input_stats())

    def meta_loss(self, model: BLUR, batch: Batch, cfg) -> Iterator[tuple[Tensor, float]]:
        """Query cross-entropy after the unroll; with ``train.truncation`` after every segment of that
        many steps (the synapses carried into the next segment, cut from the graph). With
        ``train.query_loss_at: every_step`` a segment's loss is the mean of the query losses after each
        of its learning steps."""
        d = batch.data
        U = unroll_length(cfg.train, batch.step, d.inputs.shape[1])
        K = cfg.train.truncation or U
        weights = model.initial_state(len(batch.indices), item_generators(batch.seed, batch.step, batch.indices))
        for start in range(0, U, K):
            stop = min(start + K, U)
            if cfg.train.query_loss_at == "end":
                weights, _ = model.unroll(weights, d.inputs[:, start:stop], d.labels[:, start:stop])
                loss = query_loss(model, weights, d.query_inputs, d.query_labels).mean()
            else:
                losses = []
                for s in range(start, stop):
                    weights, _ = model.unroll(weights, d.inputs[:, s:s + 1], d.labels[:, s:s + 1])
                    losses.append(query_loss(model, weights, d.query_inputs, d.query_labels).mean())
                loss = torch.stack(losses).mean()
            yield loss, (stop - start) / U
            weights = [w.detach() for w in weights]

    def es_fitness(self, model: BLUR, members: Tensor, batch: Batch, cfg) -> Tensor:
        """Query cross-entropy of each member after the whole unroll (or its mean after every step, as
        ``train.query_loss_at`` says); members are per-copy parameters."""
        d = batch.data
        U = unroll_length(cfg.train, batch.step, d.inputs.shape[1])
        two = lambda t: t.repeat_interleave(2, 0)  # both members of a pair see its task
        weights = model.initial_state(members.shape[0], item_generators(batch.seed, batch.step, batch.indices, 2),
                                      members)
        x, y, qx, qy = two(d.inputs[:, :U]), two(d.labels[:, :U]), two(d.query_inputs), two(d.query_labels)
        if cfg.train.query_loss_at == "end":
            weights, _ = model.unroll(weights, x, y, members)
            return query_loss(model, weights, qx, qy, members)
        losses = []
        for s in range(U):  # the gradient path's objective: the mean query loss after every step
            weights, _ = model.unroll(weights, x[:, s:s + 1], y[:, s:s + 1], members)
            losses.append(query_loss(model, weights, qx, qy, members))
        return torch.stack(losses).mean(0)

    def step_work(self, model: BLUR, cfg) -> dict[str, float]:
        """Learning steps of all copies per meta-step, at the initial unroll length ``train.unroll``."""
        t = cfg.train
        copies = t.population if t.optimizer == "es" else t.meta_batch
        return {"learning_steps": copies * t.unroll}

    def after_training(self, model: BLUR, task, cfg, run_dir: Path, log) -> None:
        n = cfg.train.eval_tasks
        if not n:
            return
        from metalearn_ext.evaluate import query_after_steps as protocol
        from metalearn_ext.files import atomic_write_text
        from metalearn_ext.tasks.seeds import EVAL, VALID, derive_seed

        steps, seed = cfg.eval.steps, cfg.train.seed  # VALID: never the tasks `metalearn eval` reports
        b = protocol.heldout_set(cfg, task).tasks(seed, VALID, n, steps[-1], cfg.task.batch_size, cfg.eval.query)
        gens = item_generators(derive_seed(seed, EVAL), VALID, range(n))
        acc = protocol.blur_accuracy_standardized(model, b, steps, gens).mean(1)
        res = {"steps": steps, "accuracy": acc.tolist(), "tasks": n, "chance": 1.0 / model.num_classes}
        atomic_write_text(run_dir / "eval.json", json.dumps(res))
        log(f"held-out query accuracy over {n} tasks after " + ", ".join(f"{s}: {a:.3f}" for s, a in zip(steps, acc))
            + f" steps (chance {res['chance']:.2f})")

    def evaluate(self, run_dir, overrides, *, log, progress: bool) -> dict:
        from metalearn_ext.evaluate.query_after_steps import run_meta_test

        return run_meta_test(run_dir, overrides, log=log)

    def format_results(self, results: dict) -> str:
        from metalearn_ext.evaluate.query_after_steps import format_table

        return format_table(results)

    def plot(self, run_dir: Path, log) -> list[Path]:
        from metalearn_ext.evaluate.query_after_steps import META_TEST, plot_accuracy
        from metalearn_ext.train.plot import plot_training
        from metalearn_ext.train.run_dir import saved_config

        classes = len(saved_config(run_dir)["task"]["train_classes"])
        paths = [plot_training(run_dir, chance_loss=math.log(classes), title="BLUR meta-training",
                               ylabel="query cross-entropy after the unroll")]
        if (Path(run_dir) / META_TEST).exists():
            paths.append(plot_accuracy(run_dir))
        else:
            log(f"query_accuracy.png not drawn: {Path(run_dir) / META_TEST} does not exist yet "
                f"(run `metalearn eval {run_dir}` first)")
        return paths
