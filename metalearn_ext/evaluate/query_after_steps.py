"""BLUR's protocol (``metalearn eval``): query accuracy after 1, 5, 10, 25, 50, 100 learning steps on
tasks never seen in meta-training, beside SGD, SGD with momentum and Adam on a linear classifier and
on BLUR's own architecture.

Task sets (``eval.tasks`` tasks each, the same tasks for every learner): ``heldout``, the run's
held-out classes (digits 5–9), and ``unseen``, ``eval.unseen_classes`` of another data set (test
split of Fashion-MNIST by default) resized to the meta-training resolution, skipped with the data
package's message when its files are absent. Inputs are standardized per feature with the
statistics of their own task set's classes (the meta-training tasks, on which the baselines are
tuned, with the meta-training statistics BLUR carries), identically for every learner; BLUR
receives them through its stored statistics unchanged. Each baseline's learning rate is chosen per column (step count) over
``eval.lr_grid`` on ``eval.tune_tasks`` meta-*training* tasks, never on the test tasks; the rival
in a column is the tuned baseline with the best test mean there (its best case). Intervals are 95%
Student-t over tasks; BLUR minus the rival is paired over the same tasks.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metalearn_ext.evaluate.batch_baselines import baseline_query_accuracy
from metalearn_ext.evaluate.stats import interval, paired_interval
from metalearn_ext.files import atomic_write
from metalearn_ext.tasks.batch_tasks import ClassTaskBatch, ClassTaskSource
from metalearn_ext.tasks.seeds import (
    BASELINE_INIT,
    EVAL,
    TEST,
    TUNE,
    derive_seed,
    generator,
)

__all__ = ["ACCURACY_PNG", "BASELINES", "META_TEST", "blur_accuracy_standardized", "blur_query_accuracy", "format_table",
           "heldout_set", "plot_accuracy", "run_meta_test"]

META_TEST = "meta_test.json"
ACCURACY_PNG = "query_accuracy.png"
# name -> (optimizer, same architecture as BLUR?)
BASELINES = {f"{opt}-{arch}": (opt, arch == "mlp") for arch in ("linear", "mlp") for opt in ("sgd", "momentum", "adam")}
LABELS = {"blur": "BLUR", "sgd-linear": "SGD linear", "momentum-linear": "SGD+mom. linear",
          "adam-linear": "Adam linear", "sgd-mlp": "SGD same net", "momentum-mlp": "SGD+mom. same net",
          "adam-mlp": "Adam same net"}
COLORS = {"sgd": "C0", "momentum": "C2", "adam": "C1"}  # BLUR is C3; linear solid, same net dashed


def blur_query_accuracy(model, batch: ClassTaskBatch, steps_at: Sequence[int], generators: list[torch.Generator]
                        ) -> Tensor:
    """(len(steps_at), T) query accuracy of BLUR after each count of learning steps, from fresh
    synapses drawn with one generator per task; ``model.state`` is left as it was."""
    saved = model.state
    model.state = model.initial_state(batch.inputs.shape[0], generators)
    out, done = [], 0
    try:
        with torch.no_grad():
            for n in steps_at:
                model.learn(batch.inputs[:, done:n], batch.labels[:, done:n])
                done = n
                out.append((model.predict(batch.query_inputs).argmax(-1) == batch.query_labels).float().mean(1))
    finally:
        model.state = saved
    return torch.stack(out)


def blur_accuracy_standardized(model, b: ClassTaskBatch, steps_at: Sequence[int],
                               generators: list[torch.Generator]) -> Tensor:
    """:func:`blur_query_accuracy` of already standardized tasks (BLUR standardizes with its stored
    statistics, so they are undone first: it sees exactly what the baselines see)."""
    mean, std = model.input_mean, model.input_std
    raw = ClassTaskBatch(b.inputs * std + mean, b.labels, b.query_inputs * std + mean, b.query_labels)
    return blur_query_accuracy(model, raw, steps_at, generators)


@dataclass
class TaskSet:
    """Tasks of one kind, standardized with (mean, std) (D,) of their own data set."""

    name: str
    title: str
    source: ClassTaskSource
    mean: Tensor
    std: Tensor

    def tasks(self, seed: int, purpose: int, n: int, steps: int, batch_size: int, query: int) -> ClassTaskBatch:
        parts = [self.source.draw(generator(seed, purpose, i), steps, batch_size, query) for i in range(n)]
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])
        z = lambda x: (x - self.mean) / self.std
        return ClassTaskBatch(z(cat("inputs")), cat("labels"), z(cat("query_inputs")), cat("query_labels"))


def heldout_set(cfg, task) -> TaskSet:
    """The run's held-out classes, standardized with their own statistics: with the meta-training
    classes' ones, a rule meta-trained on digits 0-4 stayed stable there but fell to chance on 5-9
    beyond ~25 steps."""
    return TaskSet("heldout", f"held-out {cfg.task.dataset} classes {cfg.task.test_classes}", task.test,
                   *task.test.input_stats())


def _task_sets(cfg, task) -> tuple[list[TaskSet], dict[str, str]]:
    from metalearn_ext.data import load_mnist

    e = cfg.eval
    sets = [heldout_set(cfg, task)]
    skipped = {}
    if e.unseen_dataset is not None:
        try:
            ds = load_mnist("test", name=e.unseen_dataset, root=e.unseen_root)
            src = ClassTaskSource(ds, e.unseen_classes, task.resolution)
        except FileNotFoundError as err:
            skipped["unseen"] = f"{e.unseen_dataset} is not installed ({str(err).splitlines()[0]})"
        else:
            if src.input_dim != task.train.input_dim:
                skipped["unseen"] = f"{e.unseen_dataset} gives {src.input_dim} inputs, the network takes " \
                                    f"{task.train.input_dim}"
            else:
                title = f"unseen: {e.unseen_dataset} classes {e.unseen_classes} at {task.resolution}x{task.resolution}"
                sets.append(TaskSet("unseen", title, src, *src.input_stats()))
    return sets, skipped


def _baseline(name: str, b: ClassTaskBatch, sizes: list[int], lrs: list[float], cfg, seed: int) -> Tensor:
    """(len(lrs), len(steps), n) query accuracy of baseline ``name`` at each rate, all in one batch."""
    opt, same_net = BASELINES[name]
    G, n = len(lrs), b.inputs.shape[0]
    rep = lambda t: t.repeat(G, *([1] * (t.dim() - 1)))
    acc = baseline_query_accuracy(rep(b.inputs), rep(b.labels), rep(b.query_inputs), rep(b.query_labels),
                                  sizes if same_net else [sizes[0], sizes[-1]], optimizer=opt,
                                  lr=torch.tensor(lrs).repeat_interleave(n), steps_at=cfg.eval.steps,
                                  generator=generator(seed, BASELINE_INIT), momentum=cfg.eval.momentum)
    return acc.view(len(cfg.eval.steps), G, n).transpose(0, 1)


def run_meta_test(run_dir: str | Path, overrides: list[str] | None = None, *, log: Callable[[str], None] = print
                  ) -> dict:
    """Meta-test the run in ``run_dir``; writes ``meta_test.json`` there (atomically) and returns it."""
    from metalearn_ext.methods.blur import item_generators
    from metalearn_ext.train.run_dir import load_trainer

    start = time.perf_counter()
    run_dir = Path(run_dir)
    trainer = load_trainer(run_dir, overrides)
    cfg, model = trainer.cfg, trainer.model
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    e, seed, B = cfg.eval, cfg.train.seed, cfg.task.batch_size
    S = e.steps[-1]
    sets, skipped = _task_sets(cfg, trainer.task)
    for name, why in skipped.items():
        log(f"  skipping task set {name!r}: {why}")
    log(f"meta-test of {run_dir} (step {trainer.step_count}): {e.tasks} tasks per task set, query accuracy after "
        f"{e.steps} steps of {B}")
    tune_set = TaskSet("meta-train", "meta-training", trainer.task.train, *trainer.task.train.input_stats())
    tb = tune_set.tasks(seed, TUNE, e.tune_tasks, S, B, e.query)
    tuning = {}
    for name in BASELINES:
        acc = _baseline(name, tb, model.sizes, list(e.lr_grid), cfg, seed).mean(2)  # (G, steps)
        tuning[name] = {"lr_grid": list(e.lr_grid), "acc": acc.T.tolist(),
                        "best_lr": [float(e.lr_grid[int(i)]) for i in acc.argmax(0)]}
        log(f"  tuned {name}: best lr per column {tuning[name]['best_lr']}")
    results = {}
    for ts in sets:
        b = ts.tasks(seed, TEST, e.tasks, S, B, e.query)
        gens = item_generators(derive_seed(seed, EVAL), TEST, range(e.tasks))
        per_task = {"blur": blur_accuracy_standardized(model, b, e.steps, gens)}
        for name in BASELINES:
            best = tuning[name]["best_lr"]
            lrs = sorted(set(best))
            acc = _baseline(name, b, model.sizes, lrs, cfg, seed)  # (len(lrs), steps, n)
            per_task[name] = torch.stack([acc[lrs.index(lr), c] for c, lr in enumerate(best)])
        learners = {k: [interval(v[c]) for c in range(len(e.steps))] for k, v in per_task.items()}
        margin = []
        for c in range(len(e.steps)):
            rival = max(BASELINES, key=lambda n: float(per_task[n][c].mean()))
            margin.append({"baseline": rival, "lr": tuning[rival]["best_lr"][c],
                           **paired_interval(per_task["blur"][c], per_task[rival][c])})
        results[ts.name] = {"title": ts.title, "learners": learners, "blur_minus_best_baseline": margin}
        log(f"  {ts.name}: done")
    out = {
        "run_dir": str(run_dir), "step": trainer.step_count, "steps": list(e.steps), "tasks": e.tasks,
        "batch_size": B, "query": e.query, "chance": 1.0 / model.num_classes,
        "interval": "95% Student-t over tasks; blur_minus_best_baseline paired over the same tasks, against the "
                    "tuned baseline with the best test mean in that column",
        "baseline_tuning": "learning rate per column maximizing query accuracy on eval.tune_tasks meta-training tasks",
        "config": cfg.to_dict(), "tuning": tuning, "task_sets": results, "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
    atomic_write(run_dir / META_TEST, lambda f: json.dump(out, f, indent=1))
    return out


def format_table(res: dict) -> str:
    """One block per task set: mean ± 95% half-interval per step count; * marks the best in a column."""
    steps = res["steps"]
    lines = [(f"Query accuracy after N learning steps of {res['batch_size']} ({res['tasks']} tasks per task set, "
              f"{res['query']} queries each; mean ± 95% interval; chance {res['chance']:.2f}; * = best in column)")]
    for name, ts in res["task_sets"].items():
        lines += ["", f"[{name}] {ts['title']}", f"  {'learner':<19}" + "".join(f"{'N = ' + str(s):>15}" for s in steps)]
        best = [max(v[c]["mean"] for v in ts["learners"].values()) for c in range(len(steps))]
        for learner, v in ts["learners"].items():
            cells = "".join(f"{v[c]['mean']:>7.3f} ± {v[c]['half']:.3f}{'*' if v[c]['mean'] == best[c] else ' '}"
                            for c in range(len(steps)))
            lines.append(f"  {LABELS[learner]:<19}{cells}")
        m = ts["blur_minus_best_baseline"]
        lines.append(f"  {'BLUR - best':<19}" + "".join(f"{x['mean']:>+7.3f} ± {x['half']:.3f} " for x in m))
        lines.append(f"  {'  best baseline':<19}" + "".join(f"{LABELS[x['baseline']][:14]:>15}" for x in m))
    for name, why in res.get("skipped", {}).items():
        lines += ["", f"[{name}] skipped: {why}"]
    return "\n".join(lines)


def plot_accuracy(run_dir: str | Path) -> Path:
    """Query accuracy against learning steps (log axis), BLUR beside every tuned baseline -> query_accuracy.png."""
    from matplotlib.figure import Figure

    from metalearn_ext.train.plot import save_figure

    run_dir = Path(run_dir)
    res = json.loads((run_dir / META_TEST).read_text())
    sets = res["task_sets"]
    fig = Figure(figsize=(5.2 * len(sets), 4.0))
    for i, (name, ts) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), i + 1)
        for learner, v in ts["learners"].items():
            mean = [c["mean"] for c in v]
            half = [c["half"] for c in v]
            style = {"color": "C3", "lw": 2.4} if learner == "blur" else \
                {"color": COLORS[BASELINES[learner][0]], "lw": 1.2, "ls": "--" if BASELINES[learner][1] else "-"}
            ax.plot(res["steps"], mean, marker="o", ms=3, label=LABELS[learner], **style)
            ax.fill_between(res["steps"], [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)],
                            color=style["color"], alpha=0.12, lw=0)
        ax.axhline(res["chance"], color="gray", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(f"learning steps (batches of {res['batch_size']})")
        ax.set_ylabel("query accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(ts["title"], fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"BLUR after {res['step']} meta-steps vs SGD / momentum / Adam tuned on meta-training tasks "
                 f"({res['tasks']} tasks, 95% bands)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, run_dir / ACCURACY_PNG)
