"""Meta-training throughput of the quick VSML config (8x8 digits): backend cpp vs reference, in one run.

Correctness first: from the same seed, the first meta-step's loss must agree between backends.
"""
from __future__ import annotations

import statistics
import time

import torch

import metalearn_ext
from metalearn_ext.methods import get_method
from metalearn_ext.train.config import load_config
from metalearn_ext.train.loop import Trainer

STEPS = 6


def _trainer(backend: str, optimizer: str, device: str) -> Trainer:
    cfg = load_config(get_method("vsml"), "quick", [f"model.backend={backend}", f"train.optimizer={optimizer}",
                                                     "train.progress=false"])
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    return Trainer(cfg)


def run(device: str = "cpu") -> list[dict]:
    if device != "cpu":
        return [dict(op="vsml_train", device=device, ok=False, error="the quick config runs on CPU")]
    backends = ["reference"] + (["cpp"] if metalearn_ext.backends()["cpp"].available else [])
    rows = []
    for method in ("gradient", "es"):
        first = {}
        for backend in backends:
            trainer = _trainer(backend, method, device)
            times, ticks = [], 0
            for i in range(STEPS + 1):
                start = time.perf_counter()
                r = trainer.step()
                if i == 0:
                    first[backend] = r.meta_loss  # also the warm-up
                    continue
                times.append(time.perf_counter() - start)
                ticks = r.work["synapse_ticks"]
            t = statistics.median(times)
            ok = abs(first[backend] - first["reference"]) <= 1e-4 * max(1.0, abs(first["reference"]))
            rows.append(dict(op="vsml_train", method=method, backend=backend, device=device, ok=ok,
                             error=None if ok else f"first meta-loss {first[backend]} vs reference {first['reference']}",
                             median_step_s=t, synapse_ticks_per_s=ticks / t, threads=torch.get_num_threads()))
        base = next(r["median_step_s"] for r in rows if r["method"] == method and r["backend"] == "reference")
        for r in rows:
            if r["method"] == method:
                r["speedup_vs_reference"] = base / r["median_step_s"]
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'optimizer':<9} {'backend':<10} {'s/meta-step':>12} {'Msyn-tick/s':>12} {'x ref':>6}"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"{r.get('method', '-'):<9} {r.get('backend', '-'):<10} WRONG: {r['error']}")
            continue
        lines.append(f"{r['method']:<9} {r['backend']:<10} {r['median_step_s']:>12.3f} "
                     f"{r['synapse_ticks_per_s'] / 1e6:>12.2f} {r['speedup_vs_reference']:>6.2f}")
    return "\n".join(lines)


BENCHES = {"vsml_train": run}
FORMATTERS = {"vsml_train": format_rows}
