"""What the few-shot methods (ProtoNet, MAML, later MetaNet) share: the evaluation section and the
protocol run on a trained run (few-shot accuracy with 95% intervals on held-out classes)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from metalearn_ext.config import ConfigError, check_non_negative, check_positive
from metalearn_ext.files import atomic_write_text
from metalearn_ext.methods.base import Batch, Method

__all__ = ["FEW_SHOT_JSON", "FewShotEvalConfig", "FewShotMethod", "evaluate_few_shot", "format_few_shot", "quick_check"]

FEW_SHOT_JSON = "few_shot.json"


@dataclass
class FewShotEvalConfig:
    """``metalearn eval``: accuracy on held-out classes, per (ways, shots) setting."""

    episodes: int = 1000  # test episodes per setting (95% intervals over these)
    n_query: int = 15  # queries per class in a test episode
    settings: list[list[int]] = field(default_factory=lambda: [[5, 1], [5, 5], [20, 1], [20, 5]])  # [ways, shots]
    batch_size: int = 50  # episodes per predict call
    check_episodes: int = 100  # the quick check at the end of training (0: none)

    def check(self, section: str) -> None:
        check_positive(self, section, "episodes", "n_query", "batch_size")
        check_non_negative(self, section, "check_episodes")
        if not self.settings or any(len(s) != 2 or min(s) < 1 for s in self.settings):
            raise ConfigError(f"config key '{section}.settings': expected a list of [ways, shots] pairs of positive "
                              f"ints, got {self.settings}")


def quick_check(predict, task, cfg, log: Callable[[str], None], run_dir: Path) -> None:
    """Held-out accuracy at the training setting over ``eval.check_episodes`` episodes -> eval.json."""
    from metalearn_ext.evaluate.few_shot import few_shot_accuracy

    e, t = cfg.eval, cfg.task
    if not e.check_episodes:
        return
    # training may use more ways than the held-out split has classes (60-way training, 50 test characters)
    n_way = min(t.n_way, task.dataset("test").num_classes)
    capped = f" (training used {t.n_way} ways; the held-out split has {n_way} classes)" if n_way < t.n_way else ""
    r = few_shot_accuracy(predict, task, n_way=n_way, k_shot=t.k_shot, n_query=e.n_query,
                          episodes=e.check_episodes, seed=cfg.train.seed, batch_size=e.batch_size)
    atomic_write_text(run_dir / "eval.json", json.dumps(r))
    log(f"held-out {n_way}-way {t.k_shot}-shot accuracy over {e.check_episodes} episodes: "
        f"{100 * r['mean']:.2f} ± {100 * r['half']:.2f}% (chance {100 / n_way:.1f}%){capped}")


def evaluate_few_shot(run_dir, overrides, predict_of: Callable, *, log: Callable[[str], None], progress: bool
                      ) -> dict:
    """Few-shot accuracy of the run in ``run_dir`` on every ``eval.settings`` pair, on the held-out
    classes; ``predict_of(model, cfg)`` gives the predict function. Writes few_shot.json."""
    from metalearn_ext.evaluate.few_shot import few_shot_accuracy
    from metalearn_ext.train.run_dir import load_trainer

    start = time.perf_counter()
    trainer = load_trainer(run_dir, overrides)
    cfg, e = trainer.cfg, trainer.cfg.eval
    if cfg.train.num_threads:
        import torch

        torch.set_num_threads(cfg.train.num_threads)
    predict = predict_of(trainer.model, cfg)
    results = []
    for n_way, k_shot in e.settings:
        r = few_shot_accuracy(predict, trainer.task, n_way=n_way, k_shot=k_shot, n_query=e.n_query,
                              episodes=e.episodes, seed=cfg.train.seed, batch_size=e.batch_size, progress=progress)
        log(f"  {n_way}-way {k_shot}-shot: {100 * r['mean']:.2f} ± {100 * r['half']:.2f}%")
        results.append(r)
    t = cfg.task
    out = {"run_dir": str(run_dir), "method": cfg.method, "step": trainer.step_count, "results": results,
           "data": f"{t.dataset}, held-out classes (never meta-trained on)"
                   + (", rotated too" if t.test_rotations else ", not rotated"),
           "interval": "95% Student-t interval over episodes", "config": cfg.to_dict(),
           "seconds": time.perf_counter() - start}
    atomic_write_text(Path(run_dir) / FEW_SHOT_JSON, json.dumps(out, indent=1))
    return out


def format_few_shot(res: dict) -> str:
    from metalearn_ext.evaluate.few_shot import few_shot_table

    text = (f"{res['method']} after {res['step']} meta-steps on {res['data']} "
            f"({res['results'][0]['episodes']} episodes per setting, mean ± 95% interval)\n"
            + few_shot_table(res["results"]))
    confused = [confused_line(r) for r in res["results"] if r.get("confused")]
    if confused:  # results written before the tally have none
        text += "\nclass pairs most often mistaken for each other (share of the setting's errors):\n" + "\n".join(confused)
    return text


def confused_line(r: dict, top: int = 3) -> str:
    """One line: the ``top`` pairs of a few-shot result's ``confused`` list with their share of its errors."""
    pairs = ", ".join(f"{a} vs {b} {100 * n / r['errors']:.0f}%" for a, b, n in r["confused"][:top])
    return f"  {r['n_way']}-way {r['k_shot']}-shot: {pairs}"


class FewShotMethod(Method):
    """A method whose model has the few-shot interface ``loss(support_x, support_y, query_x, query_y, ...)
    -> (loss, logits)`` and ``predict(support_x, support_y, query_x) -> logits`` (ProtoNet, MetaNet):
    its meta-loss, the quick check after training, ``metalearn eval`` and the training-curve plot."""

    eval_config = FewShotEvalConfig
    plot_title = "meta-training"

    def loss_options(self, cfg) -> dict:
        """Keyword arguments of ``model.loss`` that come from the config."""
        return {}

    def meta_loss(self, model, batch: Batch, cfg):
        b = batch.data
        loss, _ = model.loss(b.support_images, b.support_labels, b.query_images, b.query_labels,
                             **self.loss_options(cfg))
        return loss

    def after_training(self, model, task, cfg, run_dir, log) -> None:
        model.eval()
        try:
            quick_check(model.predict, task, cfg, log, run_dir)
        finally:
            model.train()

    def evaluate(self, run_dir, overrides, *, log, progress: bool) -> dict:
        return evaluate_few_shot(run_dir, overrides, lambda model, cfg: model.predict, log=log, progress=progress)

    def format_results(self, results: dict) -> str:
        return format_few_shot(results)

    def plot(self, run_dir, log) -> list[Path]:
        import math

        from metalearn_ext.train.config import config_from_dict
        from metalearn_ext.train.plot import plot_training
        from metalearn_ext.train.run_dir import saved_config

        cfg = config_from_dict(self, saved_config(run_dir))
        return [plot_training(run_dir, chance_loss=math.log(cfg.task.n_way), title=self.plot_title,
                              ylabel="query cross-entropy")]
