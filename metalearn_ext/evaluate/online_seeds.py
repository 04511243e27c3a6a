"""The online protocol over several meta-training seeds: each run's paired margin over the best
tuned SGD/Adam learner per task set and window, and their mean with a 95% interval over seeds.

``python -m metalearn_ext.evaluate.online_seeds RUN_DIR [RUN_DIR ...]`` (each evaluated by
``metalearn eval``, i.e. holding meta_test.json).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from metalearn_ext.evaluate.online import META_TEST, WINDOWS
from metalearn_ext.evaluate.stats import interval

__all__ = ["margins_over_seeds"]


def margins_over_seeds(run_dirs: list[str | Path]) -> dict:
    """task set -> window -> {"per_seed": [(seed, margin, half)], "mean", "half"} (interval over seeds)."""
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
        out[name] = {}
        for w in WINDOWS:
            per = [(r["config"]["train"]["seed"], r["task_sets"][name]["vsml_minus_best_baseline"][w]["mean"],
                    r["task_sets"][name]["vsml_minus_best_baseline"][w]["half"]) for r in runs]
            iv = interval(torch.tensor([m for _, m, _ in per], dtype=torch.float64))
            out[name][w] = {"per_seed": per, "mean": iv["mean"], "half": iv["half"]}
    return out


def main(argv: list[str] | None = None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    if len(dirs) < 2:
        print("usage: python -m metalearn_ext.evaluate.online_seeds RUN_DIR RUN_DIR [...]", file=sys.stderr)
        return 2
    res = margins_over_seeds(dirs)
    print(f"VSML minus the best tuned SGD/Adam learner (paired per run), over {len(dirs)} meta-training seeds")
    for name, ws in res.items():
        print(f"[{name}]")
        for w, v in ws.items():
            seeds = ", ".join(f"seed {s}: {m:+.3f} ± {h:.3f}" for s, m, h in v["per_seed"])
            print(f"  {w:<6} {v['mean']:+.3f} ± {v['half']:.3f} (95% over seeds)   {seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
