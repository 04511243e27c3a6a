"""Plots of a run: the meta-training curve (every method), and the helper that writes figures.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend change) and
written atomically into the run directory.
"""
from __future__ import annotations

from pathlib import Path

from metalearn_ext.files import atomic_write
from metalearn_ext.train.metrics import read_metrics

__all__ = ["TRAINING_PNG", "plot_training", "save_figure"]

TRAINING_PNG = "training_curve.png"


def save_figure(fig, path: Path) -> Path:
    """Render ``fig`` (a matplotlib Figure) to PNG at ``path``, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80), binary=True)


def _moving_average(values: list[float], k: int) -> tuple[list[int], list[float]]:
    out, s = [], 0.0
    for i, v in enumerate(values):
        s += v
        if i >= k:
            s -= values[i - k]
        out.append(s / min(i + 1, k))
    return list(range(len(values))), out


def plot_training(run_dir: str | Path, chance_loss: float | None = None, title: str = "meta-training",
                  ylabel: str = "meta-loss") -> Path:
    """Meta-loss per meta-step from ``metrics.jsonl`` (raw and a moving average) -> training_curve.png;
    ``chance_loss`` draws a reference line (e.g. ln C for C-way classification)."""
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
    ax.set_title(f"{title} ({steps[-1]} steps" + (f", {wall / 60:.1f} min)" if wall else ")"))
    ax.set_xlabel("meta-step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = run_dir / TRAINING_PNG
    return save_figure(fig, path)
