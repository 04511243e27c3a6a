"""The plot of accuracy by instance: one curve per evaluated checkpoint of each run (MANN beside
its LSTM baseline), 95% intervals as bands, labelled with training iterations and wall time."""
from __future__ import annotations

from pathlib import Path

from metalearn_ext.train.plot import save_figure

__all__ = ["BY_INSTANCE_PNG", "plot_by_instance"]

BY_INSTANCE_PNG = "by_instance.png"


def plot_by_instance(runs: list[dict], out_dir: Path, chance: float) -> Path:
    """``runs``: the by_instance.json contents of each run (``{"run_dir", "evaluations": [...]}``,
    the first is the run being plotted) -> ``out_dir/by_instance.png``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    k = 0
    for run in runs:
        for ev in run["evaluations"]:
            r = ev["result"]
            wall = f", {ev['wall_time'] / 60:.1f} min" if ev.get("wall_time") else ""
            color = f"C{k % 10}"
            k += 1
            ax.plot(r["instance"], r["mean"], marker="o", ms=3, color=color,
                    lw=2.0 if ev["model"] == "MANN" else 1.3, ls="-" if ev["model"] == "MANN" else "--",
                    label=f"{ev['model']}: {ev['step']} iterations{wall}")
            ax.fill_between(r["instance"], r["lo"], r["hi"], color=color, alpha=0.15, lw=0)
    ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    first = runs[0]["evaluations"][-1]
    ax.set_title(f"Accuracy by instance, held-out characters ({first['result']['episodes']} episodes, 95% bands)",
                 fontsize=9)
    ax.set_xlabel("instance of the class in the episode")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(first["result"]["instance"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / BY_INSTANCE_PNG)
