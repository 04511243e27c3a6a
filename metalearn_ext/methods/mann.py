"""MANN (Santoro et al. 2016) and its LSTM baseline on label-offset Omniglot episodes, evaluated by
accuracy by instance on held-out characters.

One method, ``mann``: ``model.memory: true`` is :class:`metalearn_ext.nn.MANN`; ``model.memory:
false`` is the baseline, a plain ``nn.LSTM`` of the same width on the same episodes
(:class:`metalearn_ext.nn.MetaRNN`), so both train, resume and evaluate through the same code and
a comparison differs in the model alone. ``metalearn eval`` appends the evaluation of the run's
current checkpoint to ``by_instance.json`` (one entry per training step evaluated, with the training
wall time), so a baseline run evaluated at MANN's iteration count and again later, at MANN's wall
time, carries both comparisons; ``eval.compare`` names those runs (``metalearn eval RUN --set
eval.compare=[runs/lstm]``), and ``metalearn plot RUN`` draws the runs its last evaluation compared.
"""
from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from metalearn_ext.config import ConfigError, check_non_negative, check_positive
from metalearn_ext.evaluate.by_instance import _ordinal
from metalearn_ext.files import atomic_write_text
from metalearn_ext.methods import register_method
from metalearn_ext.methods.base import Batch, Method, TrainConfig
from metalearn_ext.nn import MANN, MetaRNN

__all__ = ["BY_INSTANCE_JSON", "MANNEvalConfig", "MANNMethod", "MANNModelConfig", "MANNTrainConfig"]

BY_INSTANCE_JSON = "by_instance.json"
COLUMNS = (1, 2, 3, 4, 5, 10)  # the paper's Table 1


@dataclass
class MANNModelConfig:
    """The ``model:`` section (defaults: the paper's)."""

    memory: bool = True  # false: the LSTM baseline (the controller alone, no memory, no reads)
    hidden: int = 200  # LSTM units (controller or baseline)
    memory_slots: int = 128
    memory_width: int = 40
    read_heads: int = 4
    gamma: float = 0.95  # usage decay
    memory_init: float = 1e-6
    backend: typing.Literal[None, "reference", "cpp", "cuda", "triton"] = None  # the memory ops' backend

    def check(self, section: str) -> None:
        check_positive(self, section, "hidden", "memory_slots", "memory_width", "read_heads")
        if self.read_heads > self.memory_slots:
            raise ConfigError(f"config key '{section}.read_heads': must be <= memory_slots ({self.memory_slots}), "
                              f"got {self.read_heads}")
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"config key '{section}.gamma': must be in [0, 1], got {self.gamma}")


@dataclass
class MANNTrainConfig(TrainConfig):
    """The paper's optimizer: Adam 1e-3, batch 16; gradient-norm clip 10."""

    clip: float | None = 10.0


@dataclass
class MANNEvalConfig:
    """``metalearn eval``: accuracy by instance on held-out characters."""

    episodes: int = 1000  # held-out episodes (the 95% intervals are over these)
    batch_size: int = 100  # episodes per forward pass
    check_episodes: int = 100  # the quick check at the end of training (0: none)
    compare: list[str] = field(default_factory=list)  # other evaluated runs (e.g. the LSTM) shown beside this one

    def check(self, section: str) -> None:
        check_positive(self, section, "batch_size")
        if self.episodes < 2:
            raise ConfigError(f"config key '{section}.episodes': must be >= 2 (intervals over episodes), got "
                              f"{self.episodes}")
        check_non_negative(self, section, "check_episodes")


def _model_name(cfg) -> str:
    return "MANN" if cfg.model.memory else "LSTM"


@register_method
class MANNMethod(Method):
    name = "mann"
    description = "MANN: LSTM controller + LRUA memory on label-offset Omniglot (model.memory=false: the LSTM)"
    tasks = ("label-offset",)
    model_config = MANNModelConfig
    train_config = MANNTrainConfig
    eval_config = MANNEvalConfig

    def build_model(self, cfg, shapes: dict) -> nn.Module:
        m = cfg.model
        if not m.memory:
            return MetaRNN(shapes["image_dim"], shapes["n_way"], m.hidden)
        return MANN(shapes["image_dim"], shapes["n_way"], m.hidden, m.memory_slots, m.memory_width, m.read_heads,
                    m.gamma, m.memory_init, backend=m.backend)

    def meta_loss(self, model: nn.Module, batch: Batch, cfg) -> Tensor:
        """Mean per-step cross-entropy over the episodes (every step counts, the 1st instances too)."""
        b = batch.data
        _, losses = model.learn(b.inputs[..., :model.input_dim], b.labels)
        return losses.mean()

    def after_training(self, model: nn.Module, task, cfg, run_dir: Path, log) -> None:
        from metalearn_ext.evaluate.label_offset import label_offset_accuracy

        e = cfg.eval
        if not e.check_episodes:
            return
        model.eval()
        try:
            r = label_offset_accuracy(model.learn, task, episodes=e.check_episodes, seed=cfg.train.seed,
                                      batch_size=e.batch_size)
        finally:
            model.train()
        atomic_write_text(run_dir / "eval.json", json.dumps(r))
        log(f"held-out accuracy by instance over {e.check_episodes} episodes: "
            + ", ".join(f"{i}: {100 * r['mean'][i - 1]:.1f}%" for i in COLUMNS if i <= len(r["mean"]))
            + f" (chance {100 / cfg.task.n_way:.1f}%)")

    def evaluate(self, run_dir, overrides, *, log, progress: bool) -> dict:
        """Accuracy by instance of the run's checkpoint -> appended to by_instance.json (replacing an
        earlier evaluation of the same step); returns this run's evaluations and ``eval.compare``'s."""
        from metalearn_ext.evaluate.label_offset import label_offset_accuracy
        from metalearn_ext.train.loop import METRICS
        from metalearn_ext.train.metrics import read_metrics
        from metalearn_ext.train.run_dir import load_trainer

        run_dir = Path(run_dir)
        trainer = load_trainer(run_dir, overrides)
        cfg, e = trainer.cfg, trainer.cfg.eval
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        compare = [_comparable(Path(p), cfg) for p in e.compare]  # fail before the long part
        r = label_offset_accuracy(trainer.model.learn, trainer.task, episodes=e.episodes, seed=cfg.train.seed,
                                  batch_size=e.batch_size, progress=progress)
        rows = [m for m in read_metrics(run_dir / METRICS) if m.get("step") == trainer.step_count] \
            if (run_dir / METRICS).exists() else []
        t = cfg.task
        entry = {"model": _model_name(cfg), "step": trainer.step_count,
                 "wall_time": rows[-1].get("wall_time") if rows else None, "result": r,
                 "data": f"Omniglot, {t.n_way} classes x {t.examples_per_class} drawings, held-out characters"
                         + (", rotated too" if t.test_rotations else ", not rotated"),
                 "interval": "95% Student-t interval over episodes", "config": cfg.to_dict()}
        path = run_dir / BY_INSTANCE_JSON
        old = json.loads(path.read_text())["evaluations"] if path.exists() else []
        evaluations = sorted([x for x in old if x["step"] != entry["step"]] + [entry], key=lambda x: x["step"])
        out = {"run_dir": str(run_dir), "compare": e.compare, "evaluations": evaluations}
        atomic_write_text(path, json.dumps(out, indent=1))
        log(f"  {entry['model']} at step {entry['step']}: "
            + ", ".join(f"{i}: {100 * r['mean'][i - 1]:.1f}%" for i in COLUMNS if i <= len(r["mean"])))
        return {"run": out, "latest": entry, "compare": compare}

    def format_results(self, results: dict) -> str:
        runs = [results["run"], *results["compare"]]
        latest = results["latest"]
        cols = [i for i in COLUMNS if i <= len(latest["result"]["mean"])]
        lines = [(f"Accuracy by instance (%, mean ± 95% interval) on {latest['result']['episodes']} episodes of "
                  f"{latest['data']}"),
                 "| model | run | iterations | training min | " + " | ".join(_ordinal(i) for i in cols) + " |",
                 "|" + " --- |" * (4 + len(cols))]
        for run in runs:
            for ev in run["evaluations"]:
                r = ev["result"]
                wall = f"{ev['wall_time'] / 60:.1f}" if ev.get("wall_time") else "-"
                lines.append(f"| {ev['model']} | {run['run_dir']} | {ev['step']} | {wall} | "
                             + " | ".join(f"{100 * r['mean'][i - 1]:.1f} ± {100 * r['half'][i - 1]:.1f}"
                                          if i <= len(r["mean"]) else "-" for i in cols) + " |")
        return "\n".join(lines)

    def plot(self, run_dir: Path, log) -> list[Path]:
        from metalearn_ext.evaluate.by_instance_plot import plot_by_instance
        from metalearn_ext.train.config import config_from_dict
        from metalearn_ext.train.plot import plot_training
        from metalearn_ext.train.run_dir import saved_config

        cfg = config_from_dict(self, saved_config(run_dir))
        paths = [plot_training(run_dir, chance_loss=math.log(cfg.task.n_way), title=f"{_model_name(cfg)} training",
                               ylabel="mean per-step cross-entropy")]
        if (Path(run_dir) / BY_INSTANCE_JSON).exists():
            this = _read(Path(run_dir))
            runs = [this] + [_read(Path(p)) for p in this.get("compare") or cfg.eval.compare]
            paths.append(plot_by_instance(runs, Path(run_dir), chance=1 / cfg.task.n_way))
        else:
            log(f"by_instance.png not drawn: {Path(run_dir) / BY_INSTANCE_JSON} does not exist yet "
                f"(run `metalearn eval {run_dir}` first)")
        return paths


def _comparable(run_dir: Path, cfg) -> dict:
    """The evaluations of ``run_dir``, which must have been made on the same episodes as ``cfg``'s run
    (the same task config and seed: the held-out episodes follow from them)."""
    other = _read(run_dir)
    mine = cfg.to_dict()
    for ev in other["evaluations"]:
        theirs = ev["config"]
        diff = [f"task.{k}" for k in mine["task"] if not _same_setting(k, theirs["task"].get(k), mine["task"][k])]
        diff += ["train.seed"] * (theirs["train"]["seed"] != mine["train"]["seed"])
        diff += ["eval.episodes"] * (theirs["eval"]["episodes"] != mine["eval"]["episodes"])
        if diff:
            raise ConfigError(f"eval.compare: {run_dir} was evaluated on other episodes than this run (differs in: "
                              f"{', '.join(diff)})")
    return other


def _same_setting(key: str, a, b) -> bool:
    """Two task settings are the same; a data directory by where it resolves, not how it is spelled."""
    if key == "root" and a is not None and b is not None:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b


def _read(run_dir: Path) -> dict:
    path = run_dir / BY_INSTANCE_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: evaluate that run first (`metalearn eval {run_dir}`)")
    return json.loads(path.read_text())
