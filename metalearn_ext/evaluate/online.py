"""The online-learning protocol (``metalearn eval`` of VSML, later BLUR): a meta-trained online
learner beside online SGD / Adam and a meta-RNN, on tasks never seen in meta-training.

Task sets (each ``eval.episodes`` episodes of ``eval.episode_length`` examples, the same episodes
for every learner):

* ``heldout``: the run's held-out split (unseen samples — or unseen classes with
  ``task.split: classes``) of the meta-training data set, a fresh random class subset and label
  permutation per episode;
* ``heldout-projected``: the same under a random orthogonal projection of the (standardized)
  input per episode;
* ``unseen``: another data set (``eval.unseen_dataset``, Fashion-MNIST by default, its test
  split) resized to the meta-training resolution; skipped with a note when its files are absent.

Every learner predicts each example before its label is used. Inputs are standardized per feature
with the statistics of their own data set (for the meta-training data set: the meta-training
statistics the VSML network carries), identically for all learners. The SGD / Adam learning rates
are tuned on meta-*training* episodes over ``eval.lr_grid``, separately for each reported window
(first, all, last), which gives the baselines their best case in every column. The meta-RNN is
meta-trained on VSML's own meta-training episodes (same tasks, same episode length).

Accuracy is reported over the first and the last ``eval.window`` examples when episodes hold at
least two windows, else over the first and the last quarter (the JSON says which), with 95%
Student-t intervals over episodes; curves are binned over positions with the same intervals.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metalearn_ext.data import load_mnist
from metalearn_ext.evaluate.meta_rnn import train_meta_rnn
from metalearn_ext.evaluate.online_baselines import online_baseline
from metalearn_ext.files import atomic_write
from metalearn_ext.tasks.seeds import BASELINE_INIT, PROJECT, STATE, TEST, TUNE, derive_seed, generator
from metalearn_ext.tasks.streams import StreamSource, load_stream_dataset

__all__ = ["BASELINES", "LEARNERS", "META_TEST", "WINDOWS", "format_table", "run_meta_test"]

META_TEST = "meta_test.json"
WINDOWS = ("first", "all", "last")
# name -> (optimizer, hidden layer?)
BASELINES = {"sgd-linear": ("sgd", False), "adam-linear": ("adam", False),
             "sgd-mlp": ("sgd", True), "adam-mlp": ("adam", True)}
LEARNERS = ("vsml", "meta-rnn", *BASELINES)
LABELS = {"vsml": "VSML", "meta-rnn": "meta-RNN (LSTM)", "sgd-linear": "SGD linear", "adam-linear": "Adam linear",
          "sgd-mlp": "SGD MLP", "adam-mlp": "Adam MLP"}


@dataclass
class TaskSet:
    """Episodes of one kind: ``episodes(seed, purpose, n, length)`` -> standardized inputs (n, L, D), labels."""

    name: str
    title: str
    description: str
    source: StreamSource
    mean: Tensor
    std: Tensor
    project: bool = False

    def episodes(self, seed: int, purpose: int, n: int, length: int) -> tuple[Tensor, Tensor]:
        x, y = self.source.streams([derive_seed(seed, purpose, i) for i in range(n)], length)
        z = (x - self.mean) / self.std
        if self.project:
            D = z.shape[-1]
            g = generator(seed, PROJECT, purpose)
            q, r = torch.linalg.qr(torch.randn(n, D, D, generator=g))
            q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # Haar-distributed
            z = torch.bmm(z, q)
        return z, y


# ------------------------------------------------------------------------------------------ statistics
def _t975(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def interval(per_episode: Tensor) -> dict:
    """Mean and 95% Student-t interval of per-episode values (n,)."""
    n = per_episode.numel()
    mean = float(per_episode.mean())
    half = _t975(n) * float(per_episode.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "half": half}


def windows(length: int, window: int) -> tuple[int, str]:
    """(examples per first/last window, a description): ``window`` if the episode holds two, else a quarter."""
    if length >= 2 * window:
        return window, f"first / last {window} examples"
    q = max(1, length // 4)
    return q, f"first / last quarter ({q} examples; episodes shorter than 2 x {window})"


def per_episode(correct: Tensor, w: int) -> dict[str, Tensor]:
    """correct (n, L) in {0, 1} -> accuracy per episode (n,) over each window."""
    return {"first": correct[:, :w].mean(1), "all": correct.mean(1), "last": correct[:, -w:].mean(1)}


def summarize(correct: Tensor, w: int) -> dict:
    """correct (n, L) in {0, 1} -> intervals per window and a binned curve with intervals."""
    L = correct.shape[1]
    out = {k: interval(v) for k, v in per_episode(correct, w).items()}
    size = max(1, L // 40)
    starts = list(range(0, L, size))
    bins = [interval(correct[:, s : s + size].mean(1)) for s in starts]
    out["curve"] = {"x": [s + (min(s + size, L) - s + 1) / 2 for s in starts],
                    "mean": [b["mean"] for b in bins], "half": [b["half"] for b in bins], "bin": size}
    return out


def task_sets(cfg, task, mean: Tensor, std: Tensor) -> tuple[list[TaskSet], dict[str, str]]:
    """The meta-test task sets for ``cfg`` and the ones skipped, with the reason."""
    d, e = cfg.task, cfg.eval
    heldout = task.test
    what = "unseen classes" if d.split == "classes" else "unseen samples"
    sets = [TaskSet("heldout", f"held-out {d.dataset}",
                    f"held-out {d.dataset}: {what}, random class subset and label permutation per episode",
                    heldout, mean, std)]
    if e.projection:
        sets.append(TaskSet("heldout-projected", f"held-out {d.dataset}, projected",
                            f"held-out {d.dataset} under a random orthogonal input projection per episode",
                            heldout, mean, std, project=True))
    skipped: dict[str, str] = {}
    if e.unseen_dataset is not None:
        if e.unseen_dataset == d.dataset:
            skipped["unseen"] = f"eval.unseen_dataset is the meta-training data set ({d.dataset})"
        else:
            size = task.resolution
            try:
                if e.unseen_dataset == "digits":
                    ds = load_stream_dataset(dataclasses.replace(d, dataset="digits", root=None))
                else:
                    ds = load_mnist("test", name=e.unseen_dataset, root=d.root)
                src = task.source(ds, image_size=size)
            except FileNotFoundError as err:
                skipped["unseen"] = f"{e.unseen_dataset} is not installed ({str(err).splitlines()[0]})"
            except ValueError as err:  # e.g. fewer classes than data.num_classes
                skipped["unseen"] = f"{e.unseen_dataset} does not fit the network: {err}"
            else:
                if src.input_dim != heldout.input_dim:
                    skipped["unseen"] = (f"{e.unseen_dataset} at {size}x{size} gives {src.input_dim} inputs, "
                                         f"the network takes {heldout.input_dim}")
                else:
                    m, s = src.input_stats(cfg.train.seed)
                    sets.append(TaskSet("unseen", f"unseen: {e.unseen_dataset} {size}x{size}",
                                        f"{e.unseen_dataset} (never meta-trained on), test split resized to "
                                        f"{size}x{size}, standardized with its own statistics", src, m, s))
    return sets, skipped


# ------------------------------------------------------------------------------------------- learners
def _vsml_logits(model, z: Tensor, y: Tensor, seed: int) -> Tensor:
    """VSML on standardized inputs z (its own standardization is undone first, so it sees z)."""
    x = z * model.input_std + model.input_mean
    saved = model.state
    model.state = model.initial_state(z.shape[0], generator(seed, TEST, STATE))
    try:
        with torch.no_grad():
            logits, _ = model.learn(x, y)
    finally:
        model.state = saved
    return logits


def _baseline_correct(name: str, cfg, z: Tensor, y: Tensor, lrs: list[float], seed: int) -> Tensor:
    """(len(lrs), n, L) correctness of baseline ``name`` at each learning rate, all in one batch."""
    opt, mlp = BASELINES[name]
    G, n = len(lrs), z.shape[0]
    lr = torch.tensor(lrs, dtype=z.dtype).repeat_interleave(n)
    logits = online_baseline(z.repeat(G, 1, 1), y.repeat(G, 1), cfg.task.num_classes, optimizer=opt, lr=lr,
                             hidden=cfg.eval.mlp_hidden if mlp else None,
                             generator=generator(seed, BASELINE_INIT))
    return (logits.argmax(-1) == y.repeat(G, 1)).float().view(G, n, -1)


def tune_baselines(cfg, train_set: TaskSet, length: int, w: int, log: Callable[[str], None]) -> dict:
    """Per baseline: accuracy over each window at every learning rate of the grid on meta-training
    episodes, and the best rate per window."""
    e, seed = cfg.eval, cfg.train.seed
    z, y = train_set.episodes(seed, TUNE, e.tune_episodes, length)
    out = {}
    for name in BASELINES:
        t0 = time.perf_counter()
        c = _baseline_correct(name, cfg, z, y, list(e.lr_grid), seed)
        acc = {"first": c[:, :, :w].mean((1, 2)), "all": c.mean((1, 2)), "last": c[:, :, -w:].mean((1, 2))}
        best = {k: float(e.lr_grid[int(v.argmax())]) for k, v in acc.items()}
        out[name] = {"lr_grid": list(e.lr_grid), **{f"acc_{k}": v.tolist() for k, v in acc.items()}, "best_lr": best}
        log(f"  tuned {name}: lr first {best['first']:.3g}, all {best['all']:.3g}, last {best['last']:.3g} "
            f"({time.perf_counter() - t0:.1f}s)")
    return out


def _meta_rnn(cfg, run_dir: Path, trainer, log: Callable[[str], None], progress: bool):
    """The meta-RNN for this run: loaded from ``meta_rnn.pt`` if trained with the same settings, else trained."""
    from metalearn_ext.nn import MetaRNN

    e, t, d = cfg.eval, cfg.train, cfg.task
    settings = {"hidden": e.rnn_hidden, "steps": e.rnn_steps, "meta_batch": t.meta_batch,
                "length": d.episode_length, "lr": e.rnn_lr, "clip": t.clip, "seed": t.seed,
                "data": dataclasses.asdict(d)}
    path = run_dir / "meta_rnn.pt"
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
            if saved.get("settings") == settings:
                model = MetaRNN(trainer.task.train.input_dim, d.num_classes, e.rnn_hidden)
                model.load_state_dict(saved["model"])
                log(f"  meta-RNN loaded from {path}")
                return model.eval(), saved["info"]
        except Exception as err:  # noqa: BLE001 (a damaged cache, whatever the error, is retrained)
            log(f"  {path} unusable ({type(err).__name__}); retraining")
    log(f"  meta-training the meta-RNN: {settings['steps']} steps x {t.meta_batch} episodes of {d.episode_length}")
    model, info = train_meta_rnn(trainer.task.train, trainer.model.input_mean, trainer.model.input_std,
                                 hidden=e.rnn_hidden, steps=settings["steps"], meta_batch=t.meta_batch,
                                 length=d.episode_length, lr=e.rnn_lr, clip=t.clip, seed=t.seed, progress=progress)
    atomic_write(path, lambda f: torch.save({"settings": settings, "model": model.state_dict(), "info": info}, f),
                 binary=True)
    log(f"  meta-RNN: online loss {info['loss_first_tenth']:.3f} -> {info['loss_last_tenth']:.3f} "
        f"({info['seconds']:.0f}s)")
    return model, info


# ------------------------------------------------------------------------------------------------ main
def run_meta_test(run_dir: str | Path, overrides: list[str] | None = None, *, log: Callable[[str], None] = print,
                  progress: bool = False) -> dict:
    """Meta-test the run in ``run_dir``; writes ``meta_test.json`` there (atomically) and returns it."""
    run_dir = Path(run_dir)
    start = time.perf_counter()
    from metalearn_ext.train.run_dir import load_trainer

    trainer = load_trainer(run_dir, overrides)
    cfg = trainer.cfg
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    e, seed = cfg.eval, cfg.train.seed
    length = e.episode_length or cfg.task.episode_length
    w, window_kind = windows(length, e.window)
    model = trainer.model
    mean, std = model.input_mean.clone(), model.input_std.clone()
    sets, skipped = task_sets(cfg, trainer.task, mean, std)
    for name, why in skipped.items():
        log(f"  skipping task set {name!r}: {why}")
    train_set = TaskSet("meta-train", "meta-training", "meta-training episodes", trainer.task.train, mean, std)
    log(f"meta-test of {run_dir} (step {trainer.step_count}): {e.episodes} episodes of {length} per task set, "
        f"{window_kind}")
    tuning = tune_baselines(cfg, train_set, length, w, log)
    rnn, rnn_info = _meta_rnn(cfg, run_dir, trainer, log, progress)
    results = {}
    for ts in sets:
        t0 = time.perf_counter()
        z, y = ts.episodes(seed, TEST, e.episodes, length)
        learners = {"vsml": (_vsml_logits(model, z, y, seed).argmax(-1) == y).float()}
        with torch.no_grad():
            learners["meta-rnn"] = (rnn.learn(z, y)[0].argmax(-1) == y).float()
        res = {k: summarize(v, w) for k, v in learners.items()}
        vsml = per_episode(learners["vsml"], w)
        base: dict[str, dict[str, Tensor]] = {}
        for name in BASELINES:
            best = tuning[name]["best_lr"]
            lrs = sorted(set(best.values()))
            c = _baseline_correct(name, cfg, z, y, lrs, seed)
            base[name] = {k: per_episode(c[lrs.index(best[k])], w)[k] for k in WINDOWS}
            res[name] = {k: interval(base[name][k]) for k in WINDOWS}
            res[name]["curve"] = summarize(c[lrs.index(best["all"])], w)["curve"]  # the rate tuned for the episode
            res[name]["lr"] = best
        margin = {}
        for k in WINDOWS:  # paired over the same episodes: VSML minus the best tuned SGD/Adam learner
            rival = max(BASELINES, key=lambda b: float(base[b][k].mean()))
            margin[k] = {"baseline": rival, **interval(vsml[k] - base[rival][k])}
        results[ts.name] = {"title": ts.title, "description": ts.description, "learners": res,
                            "vsml_minus_best_baseline": margin}
        log(f"  {ts.name}: done ({time.perf_counter() - t0:.1f}s)")
    out = {
        "run_dir": str(run_dir), "step": trainer.step_count, "episode_length": length, "episodes": e.episodes,
        "window": w, "window_kind": window_kind, "chance": 1.0 / cfg.task.num_classes,
        "interval": "95% Student-t interval over episodes (mean +- half); vsml_minus_best_baseline: paired over the "
                    "same episodes, against the tuned SGD/Adam learner with the best mean in that window",
        "protocol": "online accuracy: each example is predicted before its label is used",
        "standardization": "per-feature, with the statistics of each data set (the meta-training statistics for "
                           "the meta-training data set), identical for all learners",
        "baseline_tuning": "learning rate per window (first/all/last) maximizing online accuracy on meta-training "
                           "episodes over eval.lr_grid; curves use the rate tuned for the whole episode",
        "config": cfg.to_dict(),
        "tuning": tuning, "meta_rnn": rnn_info, "task_sets": results, "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
    atomic_write(run_dir / META_TEST, lambda f: json.dump(out, f, indent=1))
    return out


def format_table(res: dict) -> str:
    """The comparison table: one block per task set, mean ± 95% half-interval per window; * marks the best."""
    w = res["window"]
    head = {"first": f"first {w}", "all": f"all {res['episode_length']}", "last": f"last {w}"}
    lines = [(f"Online accuracy before each label ({res['episodes']} episodes of {res['episode_length']} per task set; "
              f"{res['window_kind']}; mean ± 95% interval; chance {res['chance']:.2f}; * = best in column)")]
    for name, ts in res["task_sets"].items():
        lines += ["", f"[{name}] {ts['description']}",
                  f"  {'learner':<17}" + "".join(f"{head[k]:>17}" for k in WINDOWS) + "   lr first/all/last"]
        best = {k: max(v[k]["mean"] for v in ts["learners"].values()) for k in WINDOWS}
        for learner, v in ts["learners"].items():
            cells = "".join(f"{v[k]['mean']:>8.3f} ± {v[k]['half']:.3f}{'*' if v[k]['mean'] == best[k] else ' '}"
                            for k in WINDOWS)
            lr = "   " + "/".join(f"{v['lr'][k]:.2g}" for k in WINDOWS) if "lr" in v else ""
            lines.append(f"  {LABELS.get(learner, learner):<17}{cells}{lr}")
        m = ts["vsml_minus_best_baseline"]
        diffs = "".join(f"{m[k]['mean']:>+8.3f} ± {m[k]['half']:.3f} " for k in WINDOWS)
        lines.append(f"  {'VSML - best':<17}" + diffs
                     + "   paired, vs " + "/".join(LABELS[m[k]["baseline"]] for k in WINDOWS))
    for name, why in res.get("skipped", {}).items():
        lines += ["", f"[{name}] skipped: {why}"]
    return "\n".join(lines)
