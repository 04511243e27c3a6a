"""The run loop, the same for every method: checkpoints, resume, metrics, progress, signals.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoint.pt`` (every
``train.checkpoint_every`` steps and at exit, atomically), ``metrics.jsonl`` (one line per
meta-step) and whatever the method writes after training and at evaluation.

Ctrl-C or SIGTERM (what ``timeout`` and schedulers send) finishes the current meta-step, saves the
checkpoint and returns :data:`EXIT_INTERRUPTED`; a second one stops at once, leaving the last
checkpoint as it was. ``--resume`` continues from the checkpoint with the run's own config
exactly as if the run had never stopped (the metrics of steps after the checkpoint are dropped
and recomputed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from metalearn_ext.config import RunConfig
from metalearn_ext.methods.base import TrainConfig
from metalearn_ext.files import atomic_write_text
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from metalearn_ext.train.config import config_for_resume
from metalearn_ext.train.distributed import (all_reduce_sum, barrier, init_from_env, rank_and_world,
                                             threads_per_process)
from metalearn_ext.train.es import es_step
from metalearn_ext.train.gradient import gradient_step
from metalearn_ext.train.metrics import MetricsWriter, read_metrics
from metalearn_ext.train.step import StepResult

__all__ = ["CHECKPOINT", "CONFIG", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_OK", "METRICS", "Trainer",
           "resume_config", "run_training"]

EXIT_OK, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 3, 130
CHECKPOINT, METRICS, CONFIG = "checkpoint.pt", "metrics.jsonl", "config.yaml"


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """The meta-optimizer of a run (``train``: the config's ``train:`` section): Adam at ``train.lr``, or AdamW
    (decoupled decay, Loshchilov & Hutter) when ``train.weight_decay`` > 0."""
    if train.weight_decay > 0:
        return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=train.lr)


def _method(cfg: RunConfig):
    from metalearn_ext.methods import get_method

    return get_method(cfg.method)


class Trainer:
    """Model + task + optimizer + step counter of one run; ``step()`` runs one meta-step.

    Everything random in a meta-step is drawn from seeds derived from (``train.seed``, step,
    index), so the parameters, the optimizer state and the step count determine the rest of the
    run exactly.
    """

    def __init__(self, cfg: RunConfig, task=None) -> None:
        self.cfg = cfg
        self.method = _method(cfg)
        self.task = task if task is not None else self.method.build_task(cfg)
        self.shapes = self.task.shapes()
        torch.manual_seed(cfg.train.seed)  # parameter init
        self.model = self.method.build_model(cfg, self.shapes)
        self.method.prepare(self.model, self.task, cfg)
        self.optimizer = make_optimizer(self.model, cfg.train)
        self.step_count = 0
        self.bad_in_a_row = 0
        # train.ema > 0: an exponential moving average of the model's state (parameters and float buffers
        # averaged, the others copied), updated after every applied meta-step
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.train.ema > 0:
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def step(self) -> StepResult:
        optimize = es_step if self.cfg.train.optimizer == "es" else gradient_step
        lr = self.cfg.train.learning_rate(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        r = optimize(self.method, self.model, self.optimizer, self.task, self.cfg, self.step_count)
        self.step_count += 1
        self.bad_in_a_row = 0 if r.applied else self.bad_in_a_row + 1
        if r.applied and self.ema is not None:
            self._update_ema()
        return r

    def _update_ema(self) -> None:
        """ema ← d·ema + (1 − d)·weights with d = min(train.ema, (1 + step) / (10 + step)): the first
        steps, whose weights are far from the end's, are forgotten fast (as TensorFlow's
        ExponentialMovingAverage with num_updates)."""
        d = min(self.cfg.train.ema, (1 + self.step_count) / (10 + self.step_count))
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                avg = self.ema[k]
                if avg.is_floating_point():
                    avg.lerp_(v, 1.0 - d)
                else:
                    avg.copy_(v)

    def use_average(self) -> None:
        """Put the averaged weights (train.ema > 0) into the model, for evaluation; nothing without them."""
        if self.ema is not None:
            self.model.load_state_dict(self.ema)

    def state_dict(self) -> dict:
        return {"method": self.cfg.method, "config": self.cfg.to_dict(), "shapes": self.shapes,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step_count,
                "bad_in_a_row": self.bad_in_a_row, "rng": rng_state(),
                **({"ema": self.ema} if self.ema is not None else {})}

    def load_state_dict(self, payload: dict, path: str = "checkpoint") -> None:
        if payload.get("method") != self.cfg.method:
            raise CheckpointError(f"{path} is a {payload.get('method')} run, not {self.cfg.method}")
        saved, now = payload.get("config", {}), self.cfg.to_dict()
        for section in now:
            if section in ("method", "train", "eval"):
                continue
            # a key the library added after the checkpoint was written counts as its default there
            was = {**_field_defaults(self.cfg.sections[section]), **(saved.get(section) or {})}
            diff = [k for k in now[section] if was.get(k, _ABSENT) != now[section][k]]
            if diff:
                raise CheckpointError(f"{path} was written for a different {section} config (differs in: "
                                      f"{', '.join(f'{section}.{k}' for k in diff)})")
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            if self.ema is not None:
                for k, v in payload["ema"].items():
                    self.ema[k].copy_(v)
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path} does not fit this model: {e}") from e
        self.step_count = int(payload["step"])
        self.bad_in_a_row = int(payload.get("bad_in_a_row", 0))
        set_rng_state(payload["rng"])


_ABSENT = object()


def _field_defaults(section: object) -> dict:
    """The default of every field of a config section's dataclass that has one."""
    out = {}
    for f in dataclasses.fields(section):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def resume_config(out_dir: str | Path, method_name: str, overrides: list[str] | None = None) -> RunConfig:
    """The config a ``--resume`` of the run in ``out_dir`` continues with: the run's own, plus the
    overrides a resume may apply. CheckpointError if there is no run of ``method_name`` there."""
    from metalearn_ext.methods import get_method

    path = Path(out_dir) / CHECKPOINT
    payload = load_checkpoint(path)
    if payload.get("method") != method_name:
        raise CheckpointError(f"{path} is a {payload.get('method')} run; resume it with "
                              f"`metalearn train {payload.get('method')} --out {out_dir} --resume`")
    return config_for_resume(get_method(method_name), payload["config"], overrides)


class _Signals:
    """SIGINT / SIGTERM set a flag the loop checks between meta-steps (so a checkpoint never holds
    half an update); a second one raises KeyboardInterrupt at once. GNU ``timeout`` sends its SIGTERM
    twice, to the command and to the command's process group, microseconds apart: a SIGTERM within
    :data:`DUPLICATE_TERM_S` of the first is that duplicate and is ignored, so the run still saves."""

    DUPLICATE_TERM_S = 2.0

    def __init__(self, say: Callable[[str], None], resume_hint: str) -> None:
        self.flag = threading.Event()
        self.say, self.hint = say, resume_hint
        self.first: tuple[int, float] | None = None  # (signal, time.monotonic()) of the first signal

    def _handler(self, signum, frame) -> None:
        now = time.monotonic()
        if self.flag.is_set():
            if (self.first is not None and signum == self.first[0] == signal.SIGTERM
                    and now - self.first[1] < self.DUPLICATE_TERM_S):
                return
            raise KeyboardInterrupt
        self.flag.set()
        self.first = (signum, now)
        name = signal.Signals(signum).name
        self.say(f"{name}: finishing this meta-step, then saving the checkpoint (resume with `{self.hint}`; "
                 f"send it again to stop at once without saving)")

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any (so all ranks stop at the same step)."""
    if rank_and_world()[1] == 1:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)])).item() > 0)


def _trim_metrics(path: Path, upto_step: int) -> float:
    """Keep the metric lines of steps up to the checkpoint (the later ones will be recomputed);
    returns the training time they took, so ``wall_time`` continues across sessions."""
    if not path.exists():
        return 0.0
    keep = [r for r in read_metrics(path) if r.get("step", 0) <= upto_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return float(keep[-1].get("wall_time") or 0.0) if keep else 0.0


def run_training(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] = print,
                 resume_hint: str | None = None) -> int:
    """Meta-train per ``cfg`` into ``out_dir``; returns an exit code (0 done, 3 diverged, 130 interrupted).

    With ``resume`` the run continues from ``out_dir/checkpoint.pt`` (``cfg`` must be the run's own,
    see :func:`resume_config`). Under ``torchrun`` every process calls this; rank 0 alone writes.
    """
    out = Path(out_dir)
    t = cfg.train
    threads = threads_per_process(t.num_threads)
    if threads:
        torch.set_num_threads(threads)
    init_from_env(torch.device("cpu"))
    rank = rank_and_world()[0]
    ckpt_path = out / CHECKPOINT
    if not resume and ckpt_path.exists():
        raise CheckpointError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    trainer = Trainer(cfg)
    if resume:
        trainer.load_state_dict(load_checkpoint(ckpt_path), str(ckpt_path))
        log(f"resumed {ckpt_path} at step {trainer.step_count} of {t.steps}")
    writer, elapsed = None, 0.0
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if resume:
            elapsed = _trim_metrics(out / METRICS, trainer.step_count)
        else:
            (out / METRICS).unlink(missing_ok=True)  # a fresh run never appends to a killed run's leftovers
        writer = MetricsWriter(out / METRICS)
    bar = None
    if rank == 0 and t.progress:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=trainer.step_count, desc=f"{cfg.method} {t.optimizer}", unit="step",
                   dynamic_ncols=True, file=sys.stderr)

    def say(message: str) -> None:
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            log(message)

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(ckpt_path, trainer.state_dict())

    hint = resume_hint or f"metalearn train {cfg.method} --out {out} --resume"
    signals = _Signals(say, hint)
    try:
        with signals.installed():
            code = _loop(trainer, writer, bar, signals.flag, checkpoint, say, ckpt_path, elapsed)
            if code == EXIT_INTERRUPTED:
                say(f"interrupted at step {trainer.step_count}: saving {ckpt_path}; resume with `{hint}`")
            if code != EXIT_DIVERGED and trainer.bad_in_a_row == 0:
                checkpoint()
    except KeyboardInterrupt:
        say(f"stopped at once at step {trainer.step_count}; {ckpt_path} holds the last saved step")
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    if code == EXIT_OK and rank == 0:
        trainer.use_average()  # the checkpoint holds both; what follows evaluates the average
        trainer.method.after_training(trainer.model, trainer.task, cfg, out, log)
    barrier()
    return code


def _loop(trainer: Trainer, writer, bar, interrupted, checkpoint, say, ckpt_path, elapsed: float) -> int:
    t = trainer.cfg.train
    start = time.perf_counter() - elapsed  # wall_time counts training time over every session
    while trainer.step_count < t.steps:
        if _any_rank(interrupted.is_set()):
            return EXIT_INTERRUPTED
        t0 = time.perf_counter()
        r = trainer.step()
        dt = time.perf_counter() - t0
        if writer is not None:
            writer.write({"step": trainer.step_count, "meta_loss": r.meta_loss, "applied": r.applied,
                          **{f"{k}_per_s": v / dt for k, v in r.work.items()}, "step_time": dt,
                          "wall_time": time.perf_counter() - start})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{r.meta_loss:.3f}", refresh=False)
        if not r.applied:
            say(f"step {trainer.step_count}: non-finite meta-loss, update skipped ({trainer.bad_in_a_row} in a row)")
            if trainer.bad_in_a_row >= t.max_bad_steps:
                say(f"stopping: {trainer.bad_in_a_row} non-finite meta-steps in a row; the last good checkpoint "
                    f"{ckpt_path} is left as it was")
                return EXIT_DIVERGED
            continue
        if trainer.step_count % t.checkpoint_every == 0:
            checkpoint()
    return EXIT_OK

