"""The neural-process family: CNP (``cnp``), the latent-variable NP (``np``) and the attentive NP
(``anp``), on GP curves (beside the exact GP posterior), image completion and sinusoids.

One objective per model (``model.loss``: the CNP's negative log-likelihood, the latent models'
negative ELBO, per target point), one protocol (predictive log-likelihood per target point on
held-out curves, split by context size, with the oracle's beside it on GP curves; for a latent
model the log-mean-exp over ``eval.num_z`` draws of z), the same plots.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metalearn_ext.config import ConfigError, check_non_negative, check_positive
from metalearn_ext.files import atomic_write_text
from metalearn_ext.methods import register_method
from metalearn_ext.methods.base import Batch, Method, TrainConfig
from metalearn_ext.nn.neural_process import ANP, CNP, LatentNP, NeuralProcess
from metalearn_ext.tasks.context_target import ContextTargetBatch, from_support_query

__all__ = [
    "LIKELIHOOD_JSON",
    "ANPMethod",
    "ANPModelConfig",
    "CNPMethod",
    "CNPModelConfig",
    "LatentNPMethod",
    "NPEvalConfig",
    "NPModelConfig",
    "NPTrainConfig",
    "SinusoidPoints",
    "context_target",
]

LIKELIHOOD_JSON = "likelihood.json"
QUICK_JSON = "eval.json"
# context-size bins of the tables (the JSON keeps every size)
GP_BINS = ((3, 5), (6, 10), (11, 20), (21, 30), (31, 40), (41, 50))


def _check_widths(section: str, **widths: list[int]) -> None:
    for key, w in widths.items():
        if not w or min(w) < 1:
            raise ConfigError(f"config key '{section}.{key}': expected positive widths, got {w}")


@dataclass
class CNPModelConfig:
    """Encoder widths ``hidden`` (the last is the representation size) and decoder hidden widths
    (``model:``); the defaults are Garnelo et al.'s: [128]·4 and [128, 128]."""

    hidden: list[int] = field(default_factory=lambda: [128, 128, 128, 128])
    decoder_hidden: list[int] = field(default_factory=lambda: [128, 128])

    def check(self, section: str) -> None:
        _check_widths(section, hidden=self.hidden, decoder_hidden=self.decoder_hidden)


@dataclass
class NPModelConfig(CNPModelConfig):
    """A CNP's sizes plus the global latent: ``z_dim``, and whether the deterministic path stays."""

    z_dim: int = 128
    deterministic: bool = True

    def check(self, section: str) -> None:
        super().check(section)
        check_positive(self, section, "z_dim")


@dataclass
class ANPModelConfig(CNPModelConfig):
    """A CNP's sizes plus cross-attention heads, optional self-attention over the context, and the
    latent (``z_dim: null``: none, the attentive CNP)."""

    z_dim: int | None = 128
    heads: int = 8
    self_attention: bool = False

    def check(self, section: str) -> None:
        super().check(section)
        check_positive(self, section, "z_dim", "heads")
        if self.hidden[-1] % self.heads:
            raise ConfigError(f"config key '{section}.heads': the representation size {self.hidden[-1]} "
                              f"(the last of {section}.hidden) must be a multiple of it, got {self.heads}")


@dataclass
class NPTrainConfig(TrainConfig):
    meta_batch: int = 64  # curves per step (Garnelo et al.: 64)
    lr: float = 5e-4


@dataclass
class NPEvalConfig:
    """``metalearn eval``: log-likelihood per target point on ``curves`` held-out curves (images,
    sinusoid tasks), ``batch_size`` at a time; latent models average ``num_z`` draws of z."""

    curves: int = 4096
    batch_size: int = 64
    num_z: int = 32
    check_curves: int = 512  # the quick check at the end of training (0: none)
    plot_curves: int = 4  # curves (images) in the pictures
    sinusoid_queries: int = 100  # query points per sinusoid task (MAML's protocol)

    def check(self, section: str) -> None:
        check_positive(self, section, "curves", "batch_size", "num_z", "plot_curves", "sinusoid_queries")
        check_non_negative(self, section, "check_curves")


class SinusoidPoints:
    """Task "sinusoid" seen as context/target sets: context = the K support points, targets = the
    support then ``n_query`` query points; ``sample`` -> :class:`ContextTargetBatch`."""

    def __init__(self, task: Any, n_query: int) -> None:
        self.task, self.n_query = task, n_query

    def sample(self, indices, *, seed: int, step: int, split: str = "train") -> ContextTargetBatch:
        b = self.task.sample(indices, seed=seed, step=step, split=split, n_query=self.n_query)
        return from_support_query(b.support_x, b.support_y, b.query_x, b.query_y)


def context_target(data: Any) -> Any:
    """A meta-batch of any of the family's tasks with context_x/y, context_mask, target_x/y, target_mask."""
    if hasattr(data, "support_x"):
        return from_support_query(data.support_x, data.support_y, data.query_x, data.query_y)
    return data


class _NeuralProcessMethod(Method):
    tasks = ("gp", "image", "sinusoid")
    default_configs = {"gp": "gp", "image": "image", "sinusoid": "sinusoid"}
    train_config = NPTrainConfig
    eval_config = NPEvalConfig

    def meta_loss(self, model: NeuralProcess, batch: Batch, cfg) -> Tensor:
        b = context_target(batch.data)
        return model.loss(b.context_x, b.context_y, b.target_x, b.target_y, b.context_mask, b.target_mask)[0]

    @staticmethod
    def predict(model: NeuralProcess, cfg):
        """The protocol's predict: the model's Normal, or for a latent model its num_z mixture components."""
        if model.is_latent:
            return lambda xc, yc, xt, m: model(xc, yc, xt, m, num_z=cfg.eval.num_z)
        return lambda xc, yc, xt, m: model(xc, yc, xt, m)

    @staticmethod
    def eval_task(task: Any, cfg) -> Any:
        return SinusoidPoints(task, cfg.eval.sinusoid_queries) if cfg.task.name == "sinusoid" else task

    def _likelihood(self, model, task, cfg, curves: int, progress: bool = False) -> dict:
        from metalearn_ext.evaluate.likelihood import log_likelihood_vs_oracle, predictive_log_likelihood

        score = log_likelihood_vs_oracle if cfg.task.name == "gp" else predictive_log_likelihood
        with torch.random.fork_rng(devices=[]):  # the draws of z: reproducible, and training's RNG untouched
            torch.manual_seed(cfg.train.seed)
            return score(self.predict(model, cfg), self.eval_task(task, cfg), curves=curves, seed=cfg.train.seed,
                         batch_size=cfg.eval.batch_size, progress=progress)

    def after_training(self, model, task, cfg, run_dir: Path, log) -> None:
        if not cfg.eval.check_curves:
            return
        model.eval()
        try:
            r = self._likelihood(model, task, cfg, cfg.eval.check_curves)
        finally:
            model.train()
        atomic_write_text(run_dir / QUICK_JSON, json.dumps(r))
        log(f"held-out log-likelihood per target point over {cfg.eval.check_curves} curves: {_summary(r)}")

    def evaluate(self, run_dir, overrides, *, log, progress: bool) -> dict:
        from metalearn_ext.evaluate.regression import regression_mse
        from metalearn_ext.train.run_dir import load_trainer

        start = time.perf_counter()
        trainer = load_trainer(run_dir, overrides)
        cfg, e = trainer.cfg, trainer.cfg.eval
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        model = trainer.model
        res: dict[str, Any] = {"likelihood": self._likelihood(model, trainer.task, cfg, e.curves, progress)}
        log(f"  log-likelihood per target point: {_summary(res['likelihood'])}")
        if cfg.task.name == "sinusoid":
            # the NP's predictive mean under MAML's protocol (same tasks, K support, 100 queries)
            mean = lambda sx, sy, qx, steps: _mean(model, cfg, sx, sy, qx)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.train.seed)
                res["mse"] = regression_mse(mean, trainer.task, steps=[0], tasks=e.curves, k_shot=cfg.task.k_shot,
                                            n_query=e.sinusoid_queries, seed=cfg.train.seed, progress=progress)
            log(f"  query MSE of the predictive mean: {res['mse']['mean'][0]:.4f} ± {res['mse']['half'][0]:.4f}")
        out = {"run_dir": str(run_dir), "method": cfg.method, "task": cfg.task.name, "step": trainer.step_count,
               "results": res, "protocol": _protocol(cfg), "config": cfg.to_dict(),
               "seconds": time.perf_counter() - start}
        atomic_write_text(Path(run_dir) / LIKELIHOOD_JSON, json.dumps(out, indent=1))
        return out

    def format_results(self, results: dict) -> str:
        r = results["results"]["likelihood"]
        lines = [f"{results['method']} on {results['task']} after {results['step']} steps: {results['protocol']}",
                 f"overall: {_summary(r)}", ""]
        has_oracle = "gap" in r
        lines += ["| context points | curves | model |" + (" oracle | gap | gap, extra targets |" if has_oracle else ""),
                  "| --- | --- | --- |" + (" --- | --- | --- |" if has_oracle else "")]
        for lo, hi, row in _binned(r["by_context_size"]):
            cells = [f"{lo}-{hi}", str(row["curves"]), f"{row['model']:.3f}"]
            if has_oracle:
                cells += [f"{row['oracle']:.3f}", f"{row['gap']:.3f}",
                          f"{row['gap_extra']:.3f}" if "gap_extra" in row else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        if "mse" in results["results"]:
            m = results["results"]["mse"]
            lines.append(f"\nquery MSE of the predictive mean ({m['k_shot']} support points, {m['n_query']} queries, "
                         f"{m['tasks']} tasks): {m['mean'][0]:.4f} ± {m['half'][0]:.4f}")
        return "\n".join(lines)

    def plot(self, run_dir, log) -> list[Path]:
        from metalearn_ext.evaluate.np_plot import plot_np_run

        return plot_np_run(self, Path(run_dir))


def _mean(model: NeuralProcess, cfg, sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
    from metalearn_ext.nn.neural_process import mixture_moments

    predict = _NeuralProcessMethod.predict(model, cfg)
    return mixture_moments(predict(sx, sy, qx, None))[0]


def _protocol(cfg) -> str:
    e, t = cfg.eval, cfg.task
    if t.name == "gp":
        what = f"GP curves ({t.kernel} kernel) beside the exact GP posterior"
    elif t.name == "image":
        what = f"held-out {t.dataset} images (pixels as points)"
    else:
        what = f"sinusoid tasks ({t.k_shot} context points, {e.sinusoid_queries} more targets)"
    z = f", mixture over {e.num_z} draws of z ~ q(z|C)" if cfg.method != "cnp" and cfg.model.z_dim else ""
    return (f"log-likelihood per target point (targets include the context) on {e.curves} {what}{z}; "
            f"95% intervals over curves")


def _summary(r: dict) -> str:
    s = f"model {r['model']['mean']:.3f} ± {r['model']['half']:.3f}"
    if "gap" in r:
        s += f", oracle {r['oracle']['mean']:.3f}, gap {r['gap']['mean']:.3f} ± {r['gap']['half']:.3f} nats"
        if "extra" in r:
            e = r["extra"]
            s += (f"; extra (non-context) targets: model {e['model']['mean']:.3f}, oracle {e['oracle']['mean']:.3f}, "
                  f"gap {e['gap']['mean']:.3f} ± {e['gap']['half']:.3f}")
    return s


def _binned(by_size: dict) -> list[tuple[int, int, dict]]:
    """Rows of the by-context-size table: the GP bins, or six equal bins of the sizes present."""
    sizes = sorted(int(k) for k in by_size)
    if sizes[0] >= GP_BINS[0][0] and sizes[-1] <= GP_BINS[-1][1]:
        bins = GP_BINS
    else:
        step = max(1, -(-(sizes[-1] - sizes[0] + 1) // 6))
        bins = tuple((lo, lo + step - 1) for lo in range(sizes[0], sizes[-1] + 1, step))
    out = []
    for lo, hi in bins:
        rows = [by_size[k] for k in by_size if lo <= int(k) <= hi]
        n = sum(r["curves"] for r in rows)
        if not n:
            continue
        keys = set.intersection(*(set(r) for r in rows)) - {"curves"}
        avg = {key: sum(r[key] * r["curves"] for r in rows) / n for key in keys}
        out.append((lo, hi, {**avg, "curves": n}))
    return out


@register_method
class CNPMethod(_NeuralProcessMethod):
    name = "cnp"
    description = "Conditional neural process: mean of encoded context points, Gaussian decoder (Garnelo 2018a)"
    model_config = CNPModelConfig

    def build_model(self, cfg, shapes: dict) -> CNP:
        m = cfg.model
        return CNP(shapes["x_dim"], shapes["y_dim"], hidden=m.hidden, decoder_hidden=m.decoder_hidden)


@register_method
class LatentNPMethod(_NeuralProcessMethod):
    name = "np"
    description = "Latent-variable neural process: global z, ELBO with KL(q(z|T) || q(z|C)) (Garnelo 2018b)"
    model_config = NPModelConfig

    def build_model(self, cfg, shapes: dict) -> LatentNP:
        m = cfg.model
        return LatentNP(shapes["x_dim"], shapes["y_dim"], hidden=m.hidden, decoder_hidden=m.decoder_hidden,
                        z_dim=m.z_dim, deterministic=m.deterministic)


@register_method
class ANPMethod(_NeuralProcessMethod):
    name = "anp"
    description = "Attentive neural process: cross-attention from targets to context, global z (Kim 2019)"
    model_config = ANPModelConfig

    def build_model(self, cfg, shapes: dict) -> ANP:
        m = cfg.model
        return ANP(shapes["x_dim"], shapes["y_dim"], hidden=m.hidden, decoder_hidden=m.decoder_hidden, z_dim=m.z_dim,
                   self_attention=m.self_attention, heads=m.heads)
