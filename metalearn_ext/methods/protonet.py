"""Prototypical Networks (Snell et al. 2017): the metric-based baseline on N-way K-shot episodes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metalearn_ext.config import check_positive
from metalearn_ext.methods import register_method
from metalearn_ext.methods._few_shot import FewShotEvalConfig, evaluate_few_shot, format_few_shot, quick_check
from metalearn_ext.methods.base import Batch, Method
from metalearn_ext.nn import Conv4, ProtoNet

__all__ = ["ProtoNetMethod", "ProtoNetModelConfig"]


@dataclass
class ProtoNetModelConfig:
    """The conv-4 embedding (``model:``): 64 channels, batch norm, 2×2 max-pool, as in the paper."""

    hidden: int = 64
    depth: int = 4
    channels_last: bool = True  # NHWC convolutions: 1.6x faster training on a CPU (benchmarks/bench_fewshot.py)

    def check(self, section: str) -> None:
        check_positive(self, section, "hidden", "depth")


@register_method
class ProtoNetMethod(Method):
    name = "protonet"
    description = "Prototypical Networks: squared Euclidean distance to class means of a conv-4 embedding"
    tasks = ("episodes",)
    model_config = ProtoNetModelConfig
    eval_config = FewShotEvalConfig

    def build_model(self, cfg, shapes: dict) -> ProtoNet:
        c = shapes["image_shape"][0]
        model = ProtoNet(Conv4(c, cfg.model.hidden, depth=cfg.model.depth))
        return model.to(memory_format=torch.channels_last) if cfg.model.channels_last else model

    def meta_loss(self, model: ProtoNet, batch: Batch, cfg) -> Tensor:
        b = batch.data
        loss, _ = model.loss(b.support_images, b.support_labels, b.query_images, b.query_labels)
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

    def plot(self, run_dir, log):
        from metalearn_ext.train.config import config_from_dict
        from metalearn_ext.train.plot import plot_training
        from metalearn_ext.train.run_dir import saved_config

        cfg = config_from_dict(self, saved_config(run_dir))
        return [plot_training(run_dir, chance_loss=math.log(cfg.task.n_way), title="ProtoNet meta-training",
                              ylabel="query cross-entropy")]
