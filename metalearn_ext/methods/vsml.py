"""VSML (Kirsch & Schmidhuber 2021): meta-trained by truncated BPTT or ES on online classification
streams, evaluated by the online protocol against tuned SGD / Adam and a meta-RNN."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.methods import register_method
from metalearn_ext.methods.base import Batch, Method, TrainConfig
from metalearn_ext.nn import VSML, VSMLState
from metalearn_ext.nn.vsml import FEEDBACK_MODES
from metalearn_ext.tasks.seeds import STATE, generator

__all__ = ["VSMLEvalConfig", "VSMLMethod", "VSMLModelConfig", "VSMLTrainConfig"]


def _model_config_from_signature() -> type:
    """The ``model:`` section: ``hidden`` (the layer sizes between the data's D and C) and every
    keyword of :class:`VSML` with its type and default, read off the constructor so the two never
    drift apart."""
    hints = typing.get_type_hints(VSML.__init__)
    fields = [("hidden", list[int], field(default_factory=list))]
    for name, p in inspect.signature(VSML.__init__).parameters.items():
        if name in ("self", "sizes"):
            continue
        tp = typing.Literal[FEEDBACK_MODES] if name == "feedback" else hints[name]
        if name == "backend":
            tp = typing.Literal[None, "reference", "cpp", "cuda", "triton"]
        fields.append((name, tp, field(default=p.default)))
    doc = "The VSML network: ``hidden`` plus the keywords of :class:`metalearn_ext.nn.VSML`."
    return dataclasses.make_dataclass("VSMLModelConfig", fields, namespace={"check": _check_model, "__doc__": doc})


def _check_model(self, section: str) -> None:
    check_positive(self, section, "state_size", "msg_size", "ticks")
    if any(h < 1 for h in self.hidden):
        raise ConfigError(f"config key '{section}.hidden': sizes must be >= 1, got {self.hidden}")
    if self.msg_size < 2:
        raise ConfigError(f"config key '{section}.msg_size': must be >= 2 (error and label channels), got "
                          f"{self.msg_size}")


VSMLModelConfig = _model_config_from_signature()


@dataclass
class VSMLTrainConfig(TrainConfig):
    """VSML's ``train:`` section: the shared run loop plus truncation and the end-of-run check."""

    lr: float | None = None  # None: 1e-3 for gradient (BPTT), 0.025 for ES (the paper's)
    truncation: int | None = None  # examples per truncated-BPTT segment (None: the whole episode)
    clip: float | None = 25.0
    eval_streams: int = 32  # held-out streams evaluated at the end of training (eval.json)

    def check(self, section: str) -> None:
        if self.lr is None:
            self.lr = 0.025 if self.optimizer == "es" else 1e-3
        super().check(section)
        check_positive(self, section, "truncation", "eval_streams")


@dataclass
class VSMLEvalConfig:
    """The meta-test (``metalearn eval``): unseen tasks, baselines, intervals."""

    episode_length: int | None = None  # meta-test episodes (None: task.episode_length)
    episodes: int = 64  # episodes per task set (the 95% intervals are over these; use >= 32)
    window: int = 100  # report the first / last `window` examples (first / last quarter if episodes are shorter)
    projection: bool = True  # also: the held-out tasks under a random orthogonal input projection per episode
    unseen_dataset: typing.Literal[None, "digits", "mnist", "fashion-mnist"] = "fashion-mnist"  # None: skip
    lr_grid: list[float] = field(default_factory=lambda: [10 ** (k / 2) for k in range(-8, 1)])  # 1e-4 .. 1
    tune_episodes: int = 64  # meta-training episodes on which the baselines' learning rates are tuned
    mlp_hidden: int = 32  # the one-hidden-layer baseline's width
    rnn_hidden: int = 128  # the meta-RNN baseline's LSTM size
    rnn_steps: int = 3000  # its meta-training steps of train.meta_batch episodes (VSML's first ones, then more)
    rnn_lr: float = 1e-2  # at 3e-3 it stayed on the ln C plateau for 1,400+ steps on the 8x8 digits

    def check(self, section: str) -> None:
        check_positive(self, section, "episode_length", "window", "tune_episodes", "mlp_hidden", "rnn_hidden",
                       "rnn_steps", "rnn_lr")
        if self.episodes < 2:
            raise ConfigError(f"config key '{section}.episodes': must be >= 2 (intervals over episodes), got "
                              f"{self.episodes}")
        if not self.lr_grid or min(self.lr_grid) <= 0:
            raise ConfigError(f"config key '{section}.lr_grid': must be a non-empty list of positive learning "
                              f"rates, got {self.lr_grid}")


EVAL_STEP = -1  # seeds of the end-of-run check never coincide with a meta-training step's


@register_method
class VSMLMethod(Method):
    name = "vsml"
    description = "VSML: every synapse a tiny shared LSTM; meta-trained by BPTT or ES on online streams"
    tasks = ("streams",)
    optimizers = ("gradient", "es")
    model_config = VSMLModelConfig
    train_config = VSMLTrainConfig
    eval_config = VSMLEvalConfig

    def build_model(self, cfg, shapes: dict) -> VSML:
        kwargs = dataclasses.asdict(cfg.model)
        hidden = kwargs.pop("hidden")
        return VSML([shapes["input_dim"], *hidden, shapes["num_classes"]], **kwargs)

    def prepare(self, model: VSML, task, cfg) -> None:
        model.set_input_stats(*task.train.input_stats(cfg.train.seed))

    @staticmethod
    def initial_states(model: VSML, batch: Batch) -> VSMLState:
        """A fresh state per item, each drawn from the item's own seed."""
        return VSMLState.cat([model.initial_state(1, generator(batch.seed, batch.step, i, STATE))
                              for i in batch.indices])

    def meta_loss(self, model: VSML, batch: Batch, cfg) -> Iterator[tuple[Tensor, float]]:
        """Mean online loss per truncated-BPTT segment of ``train.truncation`` examples (the state is
        carried into the next segment, cut from the graph)."""
        x, y = batch.data
        length = x.shape[1]
        K = cfg.train.truncation or length
        model.state = self.initial_states(model, batch)
        try:
            for start in range(0, length, K):
                seg = slice(start, min(start + K, length))
                _, losses = model.learn(x[:, seg], y[:, seg])
                yield losses.mean(), (seg.stop - seg.start) / length
                model.detach_state()
        finally:
            model.reset_state()

    def es_fitness(self, model: VSML, members: Tensor, batch: Batch, cfg) -> Tensor:
        """Mean online loss of each member over its pair's episode; the population is one batch of
        copies with per-copy parameters."""
        x, y = batch.data
        model.state = self.initial_states(model, batch).repeat_interleave(2)
        try:
            _, losses = model.learn(x.repeat_interleave(2, 0), y.repeat_interleave(2, 0), params=members)
        finally:
            model.reset_state()
        return losses.mean(1)

    def step_work(self, model: VSML, cfg) -> dict[str, float]:
        t = cfg.train
        copies = t.population if t.optimizer == "es" else t.meta_batch
        return {"synapse_ticks": model.synapse_ticks_per_example() * copies * cfg.task.episode_length}

    def after_training(self, model: VSML, task, cfg, run_dir: Path, log) -> None:
        t = cfg.train
        if not t.eval_streams:
            return
        res = evaluate_online(model, task, streams=t.eval_streams, length=cfg.task.episode_length, seed=t.seed)
        from metalearn_ext.files import atomic_write_text

        atomic_write_text(run_dir / "eval.json", json.dumps(res))
        log(f"held-out online accuracy over {t.eval_streams} streams of {cfg.task.episode_length}: first quarter "
            f"{res['acc_first']:.3f}, all {res['acc_all']:.3f}, last quarter {res['acc_last']:.3f} "
            f"(chance {res['chance']:.3f})")

    def evaluate(self, run_dir, overrides, *, log, progress: bool) -> dict:
        from metalearn_ext.evaluate.online import run_meta_test

        return run_meta_test(run_dir, overrides, log=log, progress=progress)

    def format_results(self, results: dict) -> str:
        from metalearn_ext.evaluate.online import format_table

        return format_table(results)

    def plot(self, run_dir: Path, log) -> list[Path]:
        from metalearn_ext.evaluate.online import META_TEST
        from metalearn_ext.evaluate.online_plot import plot_accuracy
        from metalearn_ext.train.config import config_from_dict
        from metalearn_ext.train.plot import plot_training
        from metalearn_ext.train.run_dir import saved_config

        cfg = config_from_dict(self, saved_config(run_dir))
        paths = [plot_training(run_dir, chance_loss=math.log(cfg.task.num_classes), title="VSML meta-training",
                               ylabel="mean online cross-entropy")]
        if (Path(run_dir) / META_TEST).exists():
            paths.append(plot_accuracy(run_dir))
        else:
            log(f"online_accuracy.png not drawn: {Path(run_dir) / META_TEST} does not exist yet "
                f"(run `metalearn eval {run_dir}` first)")
        return paths


def evaluate_online(model: VSML, task, *, streams: int, length: int, seed: int) -> dict:
    """Run ``streams`` fresh held-out episodes of ``length`` examples; accuracy is of the prediction
    made before each label was seen.

    Returns a dict: ``curve`` (L,) accuracy per position averaged over streams, ``acc_first``,
    ``acc_all``, ``acc_last`` (first quarter / all / last quarter of the episode), ``loss``
    (mean online loss), ``chance`` (1 / classes).
    """
    indices = range(streams)
    x, y = task.sample(indices, seed=seed, step=EVAL_STEP, split="test", length=length)
    batch = Batch((x, y), indices, seed, EVAL_STEP, streams)
    saved = model.state
    model.state = VSMLMethod.initial_states(model, batch)
    try:
        with torch.no_grad():
            logits, losses = model.learn(x, y)
    finally:
        model.state = saved
    correct = (logits.argmax(-1) == y).float()  # (T, L)
    q = max(1, length // 4)
    return {"curve": correct.mean(0).tolist(), "acc_first": float(correct[:, :q].mean()),
            "acc_all": float(correct.mean()), "acc_last": float(correct[:, -q:].mean()),
            "loss": float(losses.mean()), "chance": 1.0 / model.num_classes}
