"""Prototypical Networks (Snell et al. 2017): the metric-based baseline on N-way K-shot episodes."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metalearn_ext.config import check_positive
from metalearn_ext.methods import register_method
from metalearn_ext.methods._few_shot import FewShotMethod
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
class ProtoNetMethod(FewShotMethod):
    name = "protonet"
    description = "Prototypical Networks: squared Euclidean distance to class means of a conv-4 embedding"
    tasks = ("episodes",)
    model_config = ProtoNetModelConfig
    plot_title = "ProtoNet meta-training"

    def build_model(self, cfg, shapes: dict) -> ProtoNet:
        c = shapes["image_shape"][0]
        model = ProtoNet(Conv4(c, cfg.model.hidden, depth=cfg.model.depth))
        return model.to(memory_format=torch.channels_last) if cfg.model.channels_last else model
