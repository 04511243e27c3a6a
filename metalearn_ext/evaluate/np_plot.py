"""Pictures of a neural-process run: predictive bands over the GP oracle's (or the true sinusoid)
on held-out curves, log-likelihood and gap against the number of context points, image
completions (context / mean / std / truth), and the training curve."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from metalearn_ext.train.plot import plot_training, save_figure

__all__ = ["BANDS_PNG", "BY_CONTEXT_PNG", "COMPLETION_PNG", "plot_np_run"]

BANDS_PNG, BY_CONTEXT_PNG, COMPLETION_PNG = "np_bands.png", "np_by_context.png", "np_completion.png"
GRID_POINTS = 200
SAMPLE_PATHS = 3  # predictive means under single draws of z, drawn for latent models


def plot_np_run(method: Any, run_dir: Path) -> list[Path]:
    """Every picture of the run in ``run_dir`` (by-context plot only once eval.json or
    likelihood.json exists) -> their paths."""
    from metalearn_ext.train.run_dir import load_trainer

    trainer = load_trainer(run_dir)
    cfg = trainer.cfg
    objective = "negative ELBO" if trainer.model.is_latent else "negative log-likelihood"
    paths = [plot_training(run_dir, title=f"{cfg.method.upper()} training ({cfg.task.name})",
                           ylabel=f"{objective} per target point")]
    for name in ("likelihood.json", "eval.json"):
        if (run_dir / name).is_file():
            res = json.loads((run_dir / name).read_text())
            paths.append(_plot_by_context(res["results"]["likelihood"] if "results" in res else res, cfg, run_dir))
            break
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad():
        if cfg.task.name == "image":
            paths.append(_plot_completion(method, trainer, run_dir))
        else:
            paths.append(_plot_bands(method, trainer, run_dir))
    return paths


def _plot_by_context(r: dict, cfg: Any, run_dir: Path) -> Path:
    from matplotlib.figure import Figure

    sizes = sorted(int(k) for k in r["by_context_size"])
    rows = [r["by_context_size"][str(k)] if str(k) in r["by_context_size"] else r["by_context_size"][k]
            for k in sizes]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    if "gap" in r:
        ax.plot(sizes, [row["gap"] for row in rows], "o-", ms=3, color="C3", label="every target (context too)")
        extra = [(k, row["gap_extra"]) for k, row in zip(sizes, rows) if "gap_extra" in row]
        if extra:
            ax.plot(*zip(*extra), "s-", ms=3, color="C1", label="extra (non-context) targets")
        ax.axhline(0, color="gray", lw=1)
        ax.legend(fontsize=8)
        ax.set_ylabel("oracle − model (nats per target point)")
        title = f"gap to the GP oracle: {r['gap']['mean']:.3f} ± {r['gap']['half']:.3f} overall"
    else:
        ax.plot(sizes, [row["model"] for row in rows], "o-", ms=3, color="C0")
        ax.set_ylabel("log-likelihood per target point")
        title = f"log-likelihood: {r['model']['mean']:.3f} ± {r['model']['half']:.3f} overall"
    ax.set_xlabel("context points")
    ax.set_title(f"{cfg.method.upper()} on {cfg.task.name}, {r['curves']} held-out curves; {title}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, run_dir / BY_CONTEXT_PNG)


def _predictive(method: Any, model: Any, cfg: Any, xc, yc, xt, mask):
    from metalearn_ext.nn.neural_process import mixture_moments

    mean, std = mixture_moments(method.predict(model, cfg)(xc, yc, xt, mask))
    paths = model(xc, yc, xt, mask, num_z=SAMPLE_PATHS).mean if model.is_latent else None
    return mean[..., 0], std[..., 0], paths


def _plot_bands(method: Any, trainer: Any, run_dir: Path) -> Path:
    from matplotlib.figure import Figure

    from metalearn_ext.data import gp_posterior_predictive
    from metalearn_ext.tasks.context_target import from_support_query
    from metalearn_ext.tasks.seeds import EVAL, derive_seed

    cfg, model = trainer.cfg, trainer.model
    n = cfg.eval.plot_curves
    gp = cfg.task.name == "gp"
    raw = trainer.task.sample(range(n), seed=derive_seed(cfg.train.seed, EVAL), step=0, split="test",
                              **({} if gp else {"n_query": cfg.eval.sinusoid_queries}))
    b = raw if gp else from_support_query(raw.support_x, raw.support_y, raw.query_x, raw.query_y)
    lo, hi = (-2.0, 2.0) if gp else (-5.0, 5.0)
    grid = torch.linspace(lo, hi, GRID_POINTS)[None, :, None].expand(n, -1, -1).contiguous()
    mean, std, paths = _predictive(method, model, cfg, b.context_x, b.context_y, grid, b.context_mask)
    fig = Figure(figsize=(4.2 * n, 3.4))
    g = grid[0, :, 0]
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        if gp:
            om, ov = gp_posterior_predictive(b, grid)
            ax.plot(g, om[i], color="k", lw=1.2, ls="--", label="GP oracle ± 2σ")
            ax.plot(g, om[i] + 2 * ov[i].sqrt(), color="k", lw=0.7, ls=":")
            ax.plot(g, om[i] - 2 * ov[i].sqrt(), color="k", lw=0.7, ls=":")
        else:
            ax.plot(g, raw.amplitude[i] * torch.sin(g - raw.phase[i]), color="k", lw=1.2, ls="--", label="truth")
        ax.plot(g, mean[i], color="C0", lw=1.5, label=f"{cfg.method.upper()} ± 2σ")
        ax.fill_between(g, mean[i] - 2 * std[i], mean[i] + 2 * std[i], color="C0", alpha=0.2, lw=0)
        if paths is not None:
            for s in range(paths.shape[0]):
                ax.plot(g, paths[s, i, :, 0], color="C0", lw=0.6, alpha=0.6)
        nc, nt = int(b.num_context[i]), int(b.num_target[i])
        ax.plot(b.target_x[i, nc:nt, 0], b.target_y[i, nc:nt, 0], ".", color="C2", ms=3, label="targets")
        ax.plot(b.context_x[i, :nc, 0], b.context_y[i, :nc, 0], "o", color="C3", ms=4, label="context")
        ax.set_title(f"{nc} context points", fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{cfg.method.upper()} after {trainer.step_count} steps: held-out {cfg.task.name} curves", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, run_dir / BANDS_PNG)


def _plot_completion(method: Any, trainer: Any, run_dir: Path) -> Path:
    from matplotlib.figure import Figure

    from metalearn_ext.tasks.image_completion import pixel_coordinates
    from metalearn_ext.tasks.seeds import EVAL, derive_seed

    cfg, model = trainer.cfg, trainer.model
    images = trainer.task.sample(range(cfg.eval.plot_curves), seed=derive_seed(cfg.train.seed, EVAL), step=0,
                                 split="test").images
    s = cfg.task.size
    p = s * s
    lo, hi = cfg.task.context_range()
    counts = sorted({lo, max(lo, min(hi, round(0.1 * p))), hi})
    coords = pixel_coordinates(s)
    g = torch.Generator().manual_seed(cfg.train.seed)
    rows = [(img, n_c) for img in images for n_c in counts]
    fig = Figure(figsize=(4 * 1.3, len(rows) * 1.3 + 0.4))
    for r, (img, n_c) in enumerate(rows):
        order = torch.randperm(p, generator=g)[:n_c]
        y = img.reshape(p, 1)
        mean, std, _ = _predictive(method, model, cfg, coords[order][None], y[order][None], coords[None], None)
        seen = torch.zeros(p, 3)
        seen[:, 2] = 0.5  # unseen pixels blue
        seen[order] = y[order].expand(-1, 3)
        panels = [seen.reshape(s, s, 3), mean.reshape(s, s).clamp(0, 1), std.reshape(s, s), img[0]]
        for c, (panel, title) in enumerate(zip(panels, ("context", "mean", "std", "truth"))):
            ax = fig.add_subplot(len(rows), 4, 4 * r + c + 1)
            ax.imshow(panel.numpy(), cmap=None if c == 0 else "gray", vmin=0, vmax=None if c == 2 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{n_c} px", fontsize=8)
    fig.suptitle(f"{cfg.method.upper()} image completion, held-out {cfg.task.dataset}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, run_dir / COMPLETION_PNG)
