"""``metalearn plot RUN_DIR``: the meta-training curve and the meta-test's online accuracy curves as PNGs.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend change) and
written atomically (temporary file + ``os.replace``) into the run directory.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from metalearn_ext.train.meta_test import LABELS, META_TEST
from metalearn_ext.train.metrics import read_metrics

__all__ = ["ACCURACY_PNG", "TRAINING_PNG", "plot_accuracy", "plot_run", "plot_training"]

TRAINING_PNG, ACCURACY_PNG = "training_curve.png", "online_accuracy.png"
COLORS = {"vsml": "C3", "meta-rnn": "C4", "sgd-linear": "C0", "adam-linear": "C2", "sgd-mlp": "C9", "adam-mlp": "C8"}


def _save(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _moving_average(values: list[float], k: int) -> tuple[list[int], list[float]]:
    out, s = [], 0.0
    for i, v in enumerate(values):
        s += v
        if i >= k:
            s -= values[i - k]
        out.append(s / min(i + 1, k))
    return list(range(len(values))), out


def plot_training(run_dir: str | Path, chance_loss: float | None = None) -> Path:
    """Meta-loss per meta-step from ``metrics.jsonl`` (raw and a moving average) -> training_curve.png."""
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("meta_loss") is not None]
    if not rows:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} holds no finite meta-loss")
    steps = [r["step"] for r in rows]
    loss = [r["meta_loss"] for r in rows]
    _, smooth = _moving_average(loss, max(1, len(loss) // 30))
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.plot(steps, loss, color="C0", alpha=0.3, lw=0.8, label="meta-loss")
    ax.plot(steps, smooth, color="C0", lw=1.8, label="moving average")
    if chance_loss is not None:
        ax.axhline(chance_loss, color="gray", ls="--", lw=1, label=f"chance (ln C = {chance_loss:.2f})")
    wall = rows[-1].get("wall_time")
    ax.set_title(f"VSML meta-training ({steps[-1]} steps" + (f", {wall / 60:.1f} min)" if wall else ")"))
    ax.set_xlabel("meta-step")
    ax.set_ylabel("mean online cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = run_dir / TRAINING_PNG
    _save(fig, path)
    return path


def plot_accuracy(run_dir: str | Path) -> Path:
    """Online accuracy curves (binned, 95% bands) of every learner per task set -> online_accuracy.png."""
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    res = json.loads((run_dir / META_TEST).read_text())
    sets = res["task_sets"]
    cols = min(3, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows + 0.4))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(sets))]
    for ax, (name, ts) in zip(axes, sets.items()):
        for learner, v in ts["learners"].items():
            c = v["curve"]
            lo = [m - h for m, h in zip(c["mean"], c["half"])]
            hi = [m + h for m, h in zip(c["mean"], c["half"])]
            color = COLORS.get(learner)
            ax.plot(c["x"], c["mean"], color=color, lw=2.2 if learner == "vsml" else 1.3,
                    label=LABELS.get(learner, learner))
            ax.fill_between(c["x"], lo, hi, color=color, alpha=0.15, lw=0)
        ax.axhline(res["chance"], color="gray", ls="--", lw=1)
        ax.set_title(ts.get("title", name), fontsize=10)
        ax.set_xlabel(f"example in episode (bins of {ts['learners']['vsml']['curve']['bin']})")
        ax.set_ylabel("online accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Meta-test after {res['step']} meta-steps: {res['episodes']} episodes per task set, 95% bands",
                 fontsize=10)
    fig.tight_layout()
    path = run_dir / ACCURACY_PNG
    _save(fig, path)
    return path


def plot_run(run_dir: str | Path) -> list[Path]:
    """Every plot the run directory has the data for: the training curve, and the accuracy curves
    once ``metalearn eval`` has written meta_test.json."""
    run_dir = Path(run_dir)
    chance = None
    if (run_dir / "config.yaml").exists():
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        chance = math.log(cfg.get("data", {}).get("num_classes", 10))
    paths = [plot_training(run_dir, chance)]
    if (run_dir / META_TEST).exists():
        paths.append(plot_accuracy(run_dir))
    return paths
