"""The meta-training run: model, tasks, optimizer, checkpoints, metrics, progress, Ctrl-C, resume.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoint.pt`` (written every
``train.checkpoint_every`` steps and at exit, atomically), ``metrics.jsonl`` (one line per
meta-step) and, at the end, ``eval.json`` (online accuracy on held-out streams). ``metalearn eval``
adds ``meta_test.json`` (and ``meta_rnn.pt``, its meta-RNN baseline), ``metalearn plot`` the PNGs.
"""
from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import yaml

from metalearn_ext.nn import VSML
from metalearn_ext.train.bptt import bptt_step
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from metalearn_ext.train.common import StepResult
from metalearn_ext.train.config import Config, config_to_dict
from metalearn_ext.train.distributed import all_reduce_sum, barrier, init_from_env, rank_and_world
from metalearn_ext.train.es import es_step
from metalearn_ext.train.evaluate import evaluate_online
from metalearn_ext.train.metrics import MetricsWriter, read_metrics
from metalearn_ext.train.tasks import TaskSource, make_task_sources

__all__ = ["EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_OK", "MetaTrainer", "build_model", "run_training"]

EXIT_OK, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 3, 130
CHECKPOINT, METRICS, CONFIG, EVAL = "checkpoint.pt", "metrics.jsonl", "config.yaml", "eval.json"


def build_model(cfg: Config, input_dim: int) -> VSML:
    m = cfg.model
    return VSML([input_dim, *m.hidden, cfg.data.num_classes], state_size=m.state_size, msg_size=m.msg_size,
                ticks=m.ticks, prev_input=m.prev_input, feedback=m.feedback, scale_by_fan_in=m.scale_by_fan_in,
                forget_bias=m.forget_bias, input_bias=m.input_bias, backend=m.backend)


class MetaTrainer:
    """Model + optimizer + step counter for one config; ``step()`` runs one meta-step (ES or BPTT).

    Everything random in a meta-step is drawn from seeds derived from (``train.seed``, step, index),
    so the parameters, the Adam state and the step count determine the rest of the run exactly.
    """

    def __init__(self, cfg: Config, tasks: TaskSource | None = None, heldout: TaskSource | None = None) -> None:
        self.cfg = cfg
        if tasks is None:
            tasks, heldout = make_task_sources(cfg.data)
        self.tasks, self.heldout = tasks, heldout
        torch.manual_seed(cfg.train.seed)  # parameter init
        self.model = build_model(cfg, tasks.input_dim)
        self.model.set_input_stats(*tasks.input_stats(cfg.train.seed))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr())
        self.step_count = 0
        self.bad_in_a_row = 0

    def step(self) -> StepResult:
        t, d = self.cfg.train, self.cfg.data
        if t.method == "es":
            r = es_step(self.model, self.optimizer, self.tasks, seed=t.seed, step=self.step_count,
                        population=t.population, sigma=t.sigma, length=d.episode_length)
        else:
            r = bptt_step(self.model, self.optimizer, self.tasks, seed=t.seed, step=self.step_count,
                          meta_batch=t.meta_batch, length=d.episode_length, truncation=t.truncation, clip=t.clip)
        self.step_count += 1
        self.bad_in_a_row = 0 if r.applied else self.bad_in_a_row + 1
        return r

    def state_dict(self) -> dict:
        return {"config": config_to_dict(self.cfg), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step_count,
                "bad_in_a_row": self.bad_in_a_row, "rng": rng_state()}

    def load_state_dict(self, payload: dict, path: str = "checkpoint") -> None:
        saved = payload.get("config", {})
        now = config_to_dict(self.cfg)
        for section in ("model", "data"):
            if saved.get(section) != now[section]:
                diff = [k for k in now[section] if saved.get(section, {}).get(k) != now[section][k]]
                raise CheckpointError(f"{path} was written for a different {section} config (differs in: "
                                      f"{', '.join(f'{section}.{k}' for k in diff)})")
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path} does not fit this model: {e}") from e
        self.step_count = int(payload["step"])
        self.bad_in_a_row = int(payload.get("bad_in_a_row", 0))
        set_rng_state(payload["rng"])


def _trim_metrics(path: Path, upto_step: int) -> None:
    """Drop metric lines of steps after the checkpoint (they will be recomputed on resume)."""
    if path.exists():
        keep = [r for r in read_metrics(path) if r.get("step", 0) <= upto_step]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


@contextlib.contextmanager
def _deferred_sigint(log):
    """Ctrl-C sets a flag that the loop checks between meta-steps (so a checkpoint never captures
    half an update); a second Ctrl-C interrupts at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        log("Ctrl-C: finishing this meta-step, then saving (press again to stop at once without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def run_training(cfg: Config, out_dir: str | Path, *, resume: bool = False, log=print) -> int:
    """Meta-train per ``cfg`` into ``out_dir``; returns an exit code (0 done, 3 diverged, 130 Ctrl-C).

    Under ``torchrun`` every process calls this; rank 0 alone writes files.
    """
    out = Path(out_dir)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    init_from_env(torch.device("cpu"))
    rank = rank_and_world()[0]
    trainer = MetaTrainer(cfg)
    ckpt_path = out / CHECKPOINT
    if resume:
        trainer.load_state_dict(load_checkpoint(ckpt_path), str(ckpt_path))
        log(f"resumed from {ckpt_path} at step {trainer.step_count}")
    elif rank == 0 and ckpt_path.exists():
        raise CheckpointError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        if resume:
            _trim_metrics(out / METRICS, trainer.step_count)
        writer = MetricsWriter(out / METRICS)

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(ckpt_path, trainer.state_dict())

    t = cfg.train
    bar = None
    if rank == 0 and t.progress:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=trainer.step_count, desc=f"vsml {t.method}", unit="step",
                   dynamic_ncols=True, file=sys.stderr)
    start = time.perf_counter()
    code = EXIT_OK
    with _deferred_sigint(log) as interrupted:
        code = _loop(trainer, t, writer, bar, interrupted, checkpoint, start, log, ckpt_path)
    if code == EXIT_DIVERGED:
        return code
    if code == EXIT_INTERRUPTED:
        log(f"interrupted at step {trainer.step_count}: saving {ckpt_path}")
    if trainer.bad_in_a_row == 0:
        checkpoint()
    if code == EXIT_OK and rank == 0 and t.eval_streams:
        res = evaluate_online(trainer.model, trainer.heldout, streams=t.eval_streams,
                              length=cfg.data.episode_length, seed=t.seed)
        (out / EVAL).write_text(json.dumps(res))
        log(f"held-out online accuracy over {t.eval_streams} streams of {cfg.data.episode_length}: "
            f"first quarter {res['acc_first']:.3f}, all {res['acc_all']:.3f}, last quarter {res['acc_last']:.3f} "
            f"(chance {res['chance']:.3f})")
    barrier()
    return code


def _any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any (so all ranks stop at the same step)."""
    if rank_and_world()[1] == 1:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)])).item() > 0)


def _loop(trainer, t, writer, bar, interrupted, checkpoint, start, log, ckpt_path) -> int:
    try:
        while trainer.step_count < t.steps:
            if _any_rank(interrupted.is_set()):
                return EXIT_INTERRUPTED
            t0 = time.perf_counter()
            r = trainer.step()
            dt = time.perf_counter() - t0
            if writer is not None:
                writer.write({"step": trainer.step_count, "meta_loss": r.meta_loss, "applied": r.applied,
                              "synapse_ticks_per_s": r.synapse_ticks / dt, "step_time": dt,
                              "wall_time": time.perf_counter() - start})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{r.meta_loss:.3f}")
            if not r.applied:
                log(f"step {trainer.step_count}: non-finite meta-loss, update skipped "
                    f"({trainer.bad_in_a_row} in a row)")
                if trainer.bad_in_a_row >= t.max_bad_steps:
                    log(f"stopping: {trainer.bad_in_a_row} non-finite meta-steps in a row; the last good "
                        f"checkpoint {ckpt_path} is left as it was")
                    return EXIT_DIVERGED
                continue
            if trainer.step_count % t.checkpoint_every == 0:
                checkpoint()
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return EXIT_OK
