"""``metalearn demo``: meta-train the quick config on the 8×8 digits, meta-test it against SGD / Adam
and a meta-RNN on unseen tasks (and Fashion-MNIST if installed), print the table, draw the plots."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from metalearn_ext.train.config import load_config
from metalearn_ext.train.meta_test import format_table, run_meta_test
from metalearn_ext.train.plot import plot_run
from metalearn_ext.train.runner import EXIT_OK, run_training

__all__ = ["run_demo"]


def run_demo(out: str | Path, config: str = "quick", overrides: list[str] | None = None, *, resume: bool = False,
             log: Callable[[str], None] = print, echo: Callable[[str], None] = print) -> int:
    """Train, meta-test and plot into ``out``; returns the training's exit code (0 when all went well).
    Progress goes to ``log``, the comparison table and the file list to ``echo``."""
    out = Path(out)
    start = time.perf_counter()
    cfg = load_config(config, overrides)
    log(f"demo: meta-training VSML ({cfg.train.method}, {cfg.train.steps} steps, {cfg.data.dataset}) into {out}")
    code = run_training(cfg, out, resume=resume, log=log)
    if code != EXIT_OK:
        return code
    trained = time.perf_counter()
    res = run_meta_test(out, log=log, progress=cfg.train.progress)
    tested = time.perf_counter()
    paths = plot_run(out)
    done = time.perf_counter()
    echo(format_table(res))
    echo("")
    echo(f"demo finished in {done - start:.0f} s (meta-training {trained - start:.0f} s, meta-test "
         f"{tested - trained:.0f} s, plots {done - tested:.0f} s)")
    echo(f"files in {out}: config.yaml, checkpoint.pt, metrics.jsonl, eval.json, meta_test.json, meta_rnn.pt, "
         + ", ".join(p.name for p in paths))
    return EXIT_OK
