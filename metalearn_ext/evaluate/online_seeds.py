"""A learned learner against tuned baselines over several meta-training seeds: each run's paired
margin over the best tuned baseline per task set and column, and their mean with a 95% interval over
seeds. Works for every protocol whose meta_test.json holds ``<method>_minus_best_baseline`` per task
set: VSML's online windows ("first", "all", "last") and BLUR's columns (after N learning steps).

``python -m metalearn_ext.evaluate.online_seeds RUN_DIR [RUN_DIR ...]`` (each evaluated by
``metalearn eval``, i.e. holding meta_test.json).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from metalearn_ext.evaluate.stats import interval

__all__ = ["margins_over_seeds"]

META_TEST = "meta_test.json"
SUFFIX = "_minus_best_baseline"


def _columns(run: dict, name: str) -> tuple[str, dict[str, dict]]:
    """(the learner's name, column label -> {"mean", "half"}) of one task set of one run."""
    ts = run["task_sets"][name]
    key = next((k for k in ts if k.endswith(SUFFIX)), None)
    if key is None:
        raise ValueError(f"task set {name!r} of a meta_test.json has no '*{SUFFIX}' entry")
    margins = ts[key]
    if isinstance(margins, list):  # one entry per evaluated step count
        margins = {f"N={n}": m for n, m in zip(run["steps"], margins)}
    return key.removesuffix(SUFFIX), margins


def margins_over_seeds(run_dirs: list[str | Path]) -> dict:
    """task set -> column -> {"per_seed": [(seed, margin, half)], "mean", "half"} (interval over seeds);
    also "learner" -> the learner's name."""
    runs = []
    for d in run_dirs:
        path = Path(d) / META_TEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `metalearn eval {d}` first")
        runs.append(json.loads(path.read_text()))
    out: dict = {}
    for name in runs[0]["task_sets"]:
        if not all(name in r["task_sets"] for r in runs):
            continue
        per_run = [_columns(r, name) for r in runs]
        out["learner"] = per_run[0][0]
        out[name] = {}
        for col in per_run[0][1]:
            per = [(r["config"]["train"]["seed"], cols[col]["mean"], cols[col]["half"])
                   for r, (_, cols) in zip(runs, per_run)]
            iv = interval(torch.tensor([m for _, m, _ in per], dtype=torch.float64))
            out[name][col] = {"per_seed": per, "mean": iv["mean"], "half": iv["half"]}
    return out


def main(argv: list[str] | None = None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    if len(dirs) < 2:
        print("usage: python -m metalearn_ext.evaluate.online_seeds RUN_DIR RUN_DIR [...]", file=sys.stderr)
        return 2
    res = margins_over_seeds(dirs)
    learner = res.pop("learner", "learner").upper()
    print(f"{learner} minus the best tuned baseline (paired per run), over {len(dirs)} meta-training seeds")
    for name, cols in res.items():
        print(f"[{name}]")
        for col, v in cols.items():
            seeds = ", ".join(f"seed {s}: {m:+.3f} ± {h:.3f}" for s, m, h in v["per_seed"])
            print(f"  {col:<6} {v['mean']:+.3f} ± {v['half']:.3f} (95% over seeds)   {seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
