"""The online protocol's plot: accuracy against position in the episode, every learner, 95% bands."""
from __future__ import annotations

import json
import math
from pathlib import Path

from metalearn_ext.evaluate.online import LABELS, META_TEST
from metalearn_ext.train.plot import save_figure

__all__ = ["ACCURACY_PNG", "plot_accuracy"]

ACCURACY_PNG = "online_accuracy.png"
COLORS = {"vsml": "C3", "meta-rnn": "C4", "sgd-linear": "C0", "adam-linear": "C2", "sgd-mlp": "C9", "adam-mlp": "C8"}


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
    return save_figure(fig, path)
