"""MAML (Finn et al. 2017), second or first order: the optimization-based baseline, on N-way K-shot
episodes (conv-4 with batch statistics) and on sinusoid regression (MLP 1→40→40→1)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.files import atomic_write_text
from metalearn_ext.methods import register_method
from metalearn_ext.methods._few_shot import FewShotEvalConfig, evaluate_few_shot, format_few_shot, quick_check
from metalearn_ext.methods.base import Batch, Method, TrainConfig
from metalearn_ext.nn import MAML, MLP, Conv4
from metalearn_ext.nn.maml import norm_parameter_names

__all__ = ["REGRESSION_JSON", "MAMLEvalConfig", "MAMLMethod", "MAMLModelConfig", "MAMLTrainConfig"]

REGRESSION_JSON = "regression.json"


@dataclass
class MAMLModelConfig:
    """The learner and the inner loop (``model:``). Episodes: conv-4 (``hidden`` channels, batch norm
    with batch statistics, stride-2 convolutions unless ``pool``) and a linear head; regression:
    an MLP with ``mlp_hidden`` ReLU layers."""

    inner_lr: float = 0.4  # α: 0.4 for Omniglot 5-way, 0.01 for sinusoids (the paper's)
    inner_steps: int = 1  # inner steps in meta-training
    test_inner_steps: int = 3  # inner steps at evaluation (3 for Omniglot in the paper)
    first_order: bool = False  # drop the second-order terms (FOMAML)
    learn_inner_lr: bool = False  # α per parameter tensor, meta-learned (Meta-SGD-like)
    adapt_norm: bool = True  # the inner loop adapts batch norm's scales and offsets too (false: outer loop only,
                             # as MAML's own code, whose inner loop adapts the convolutions and the output layer)
    hidden: int = 64  # conv-4 channels
    pool: bool = False  # 2×2 max-pool (True) or stride-2 convolutions (False, MAML's Omniglot network)
    average: bool = False  # features = the mean of the last 2×2 map (MAML's code for Omniglot), not the flattened map
    mlp_hidden: list[int] = field(default_factory=lambda: [40, 40])  # regression MLP hidden sizes

    def check(self, section: str) -> None:
        check_positive(self, section, "inner_lr", "hidden")
        for key in ("inner_steps", "test_inner_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{section}.{key}': must be >= 1, got {getattr(self, key)}")
        if not self.mlp_hidden or min(self.mlp_hidden) < 1:
            raise ConfigError(f"config key '{section}.mlp_hidden': expected positive sizes, got {self.mlp_hidden}")


@dataclass
class MAMLTrainConfig(TrainConfig):
    meta_batch: int = 16  # tasks per meta-update


@dataclass
class MAMLEvalConfig(FewShotEvalConfig):
    """Episodes: few-shot accuracy per [ways, shots] setting. Regression: query MSE after each of
    ``regression_steps`` inner steps on ``regression_tasks`` held-out tasks, beside a model
    pretrained on all tasks and fine-tuned the same way."""

    regression_tasks: int = 1000
    regression_steps: list[int] = field(default_factory=lambda: [0, 1, 10])
    regression_queries: int = 100  # query points per test task
    pretrain_iterations: int = 10000  # the pretrain-and-fine-tune baseline's Adam steps (25 tasks each)

    def check(self, section: str) -> None:
        super().check(section)
        check_positive(self, section, "regression_tasks", "regression_queries")
        if self.pretrain_iterations < 0 or not self.regression_steps or min(self.regression_steps) < 0:
            raise ConfigError(f"config keys '{section}.pretrain_iterations' / '{section}.regression_steps': "
                              f"expected >= 0, got {self.pretrain_iterations} / {self.regression_steps}")


def _regression(cfg) -> bool:
    return cfg.task.name == "sinusoid"


@register_method
class MAMLMethod(Method):
    name = "maml"
    description = "MAML: gradient steps on the support set, meta-gradient through them (or first order)"
    tasks = ("episodes", "sinusoid")
    default_configs = {"episodes": "quick", "sinusoid": "sinusoid"}
    model_config = MAMLModelConfig
    train_config = MAMLTrainConfig
    eval_config = MAMLEvalConfig

    def learner(self, cfg, shapes: dict) -> nn.Module:
        """The plain module MAML adapts."""
        m = cfg.model
        if _regression(cfg):
            return MLP([1, *m.mlp_hidden, 1])
        c, h, w = shapes["image_shape"]
        conv = Conv4(c, m.hidden, pool=m.pool, track_running_stats=False, average=m.average)
        return nn.Sequential(conv, nn.Linear(conv.output_dim(h, w), shapes["n_way"]))

    def build_model(self, cfg, shapes: dict) -> MAML:
        m = cfg.model
        learner = self.learner(cfg, shapes)
        norms = norm_parameter_names(learner)
        adapt = None if m.adapt_norm else [n for n, _ in learner.named_parameters() if n not in norms]
        return MAML(learner, inner_lr=m.inner_lr, inner_steps=m.inner_steps,
                    first_order=m.first_order, loss="mse" if _regression(cfg) else "cross_entropy",
                    learn_inner_lr=m.learn_inner_lr, adapt=adapt)

    def meta_loss(self, model: MAML, batch: Batch, cfg) -> Tensor:
        b = batch.data
        if _regression(cfg):
            loss, _ = model.meta_loss(b.support_x, b.support_y, b.query_x, b.query_y)
        else:
            loss, _ = model.meta_loss(b.support_images, b.support_labels, b.query_images, b.query_labels)
        return loss

    @staticmethod
    def _predict(model: MAML, cfg):
        steps = cfg.model.test_inner_steps
        return lambda sx, sy, qx: model.predict(sx, sy, qx, steps=steps)

    def after_training(self, model: MAML, task, cfg, run_dir: Path, log) -> None:
        if not _regression(cfg):
            quick_check(self._predict(model, cfg), task, cfg, log, run_dir)

    def evaluate(self, run_dir, overrides, *, log, progress: bool) -> dict:
        from metalearn_ext.train.run_dir import saved_config

        if saved_config(run_dir).get("task", {}).get("name") != "sinusoid":
            return evaluate_few_shot(run_dir, overrides, self._predict, log=log, progress=progress)
        return self._evaluate_regression(run_dir, overrides, log=log, progress=progress)

    def _evaluate_regression(self, run_dir, overrides, *, log, progress: bool) -> dict:
        from metalearn_ext.evaluate.regression import pretrain_baseline, regression_mse
        from metalearn_ext.train.run_dir import load_trainer

        start = time.perf_counter()
        trainer = load_trainer(run_dir, overrides)
        cfg, e = trainer.cfg, trainer.cfg.eval
        model = trainer.model
        common = dict(steps=e.regression_steps, tasks=e.regression_tasks, k_shot=cfg.task.k_shot,
                      n_query=e.regression_queries, seed=cfg.train.seed, progress=progress)
        res = {"maml": regression_mse(lambda sx, sy, qx, steps: model.predict(sx, sy, qx, steps=steps)
                                      if steps else model.module(qx), trainer.task, **common)}
        log(f"  MAML: MSE {_row(res['maml'])}")
        if e.pretrain_iterations:
            log(f"  pretraining the baseline on all tasks ({e.pretrain_iterations} Adam steps of 25 tasks)")
            baseline = pretrain_baseline(lambda: self.learner(cfg, trainer.shapes), trainer.task,
                                         iterations=e.pretrain_iterations, lr=cfg.train.lr,
                                         inner_lr=cfg.model.inner_lr, seed=cfg.train.seed, progress=progress)
            res["pretrained"] = regression_mse(baseline, trainer.task, **common)
            log(f"  pretrained + fine-tuned: MSE {_row(res['pretrained'])}")
        out = {"run_dir": str(run_dir), "method": cfg.method, "step": trainer.step_count, "results": res,
               "protocol": f"query MSE on {e.regression_tasks} held-out sinusoid tasks ({cfg.task.k_shot} support "
                           f"points, {e.regression_queries} query points each) after k inner steps of size "
                           f"{cfg.model.inner_lr}; 95% intervals over tasks",
               "config": cfg.to_dict(), "seconds": time.perf_counter() - start}
        atomic_write_text(Path(run_dir) / REGRESSION_JSON, json.dumps(out, indent=1))
        return out

    def format_results(self, results: dict) -> str:
        if "protocol" not in results:
            return format_few_shot(results)
        steps = next(iter(results["results"].values()))["steps"]
        lines = [f"MAML after {results['step']} meta-steps: {results['protocol']}",
                 "| model | " + " | ".join(f"MSE after {k} step{'s' * (k != 1)}" for k in steps) + " |",
                 "|" + " --- |" * (len(steps) + 1)]
        names = {"maml": "MAML", "pretrained": "pretrained on all tasks, fine-tuned"}
        for name, r in results["results"].items():
            lines.append(f"| {names.get(name, name)} | "
                         + " | ".join(f"{m:.3f} ± {h:.3f}" for m, h in zip(r["mean"], r["half"])) + " |")
        return "\n".join(lines)

    def plot(self, run_dir, log):
        from metalearn_ext.train.config import config_from_dict
        from metalearn_ext.train.plot import plot_training
        from metalearn_ext.train.run_dir import saved_config

        cfg = config_from_dict(self, saved_config(run_dir))
        if _regression(cfg):
            return [plot_training(run_dir, title="MAML meta-training (sinusoid)", ylabel="post-update query MSE")]
        return [plot_training(run_dir, chance_loss=math.log(cfg.task.n_way), title="MAML meta-training",
                              ylabel="post-update query cross-entropy")]


def _row(r: dict) -> str:
    return ", ".join(f"{k} steps {m:.3f} ± {h:.3f}" for k, m, h in zip(r["steps"], r["mean"], r["half"]))

