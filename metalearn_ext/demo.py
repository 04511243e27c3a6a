"""``metalearn demo``: meta-train VSML's quick config on the 8×8 digits, meta-test it against SGD /
Adam and a meta-RNN on unseen tasks (and Fashion-MNIST if installed), print the table, draw the
plots. Run again, it reuses the finished run in ``out`` (or resumes an interrupted one)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from metalearn_ext.config import ConfigError
from metalearn_ext.methods import get_method
from metalearn_ext.train.config import load_config
from metalearn_ext.train.loop import CHECKPOINT, EXIT_OK, resume_config, run_training

__all__ = ["run_demo"]


def run_demo(out: str | Path, config: str = "quick", overrides: list[str] | None = None, *,
             log: Callable[[str], None] = print, echo: Callable[[str], None] = print) -> int:
    """Train (or resume / reuse), meta-test and plot into ``out``; returns the training's exit code.
    Progress goes to ``log``, the comparison table and the file list to ``echo``."""
    out = Path(out)
    method = get_method("vsml")
    start = time.perf_counter()
    cfg = load_config(method, config, overrides)
    resume = (out / CHECKPOINT).exists()
    if resume:
        saved = resume_config(out, method.name)
        if saved != cfg:
            raise ConfigError(f"{out} holds a VSML run with another config; choose another --out (or delete {out})")
        log(f"demo: {out} holds this run already; continuing it")
    log(f"demo: meta-training VSML ({cfg.train.optimizer}, {cfg.train.steps} steps, {cfg.task.dataset}) into {out}")
    code = run_training(cfg, out, resume=resume, log=log, resume_hint="make demo")
    if code != EXIT_OK:
        return code
    trained = time.perf_counter()
    res = method.evaluate(out, [], log=log, progress=cfg.train.progress)
    tested = time.perf_counter()
    paths = method.plot(out, log)
    done = time.perf_counter()
    echo(method.format_results(res))
    echo("")
    echo(f"demo finished in {done - start:.0f} s (meta-training {trained - start:.0f} s, meta-test "
         f"{tested - trained:.0f} s, plots {done - tested:.0f} s)")
    echo(f"files in {out}: config.yaml, checkpoint.pt, metrics.jsonl, eval.json, meta_test.json, meta_rnn.pt, "
         + ", ".join(p.name for p in paths))
    return EXIT_OK
