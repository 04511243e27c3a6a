"""MetaNet (Munkhdalai & Yu 2017): fast weights from the support set's loss gradients, on N-way
K-shot episodes, with the few-shot protocol ProtoNet and MAML use."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.methods import register_method
from metalearn_ext.methods._few_shot import FEW_SHOT_JSON, FewShotEvalConfig, FewShotMethod
from metalearn_ext.methods.base import TrainConfig
from metalearn_ext.nn import MetaNet

__all__ = ["COMPARISON_PNG", "MetaNetEvalConfig", "MetaNetMethod", "MetaNetModelConfig", "MetaNetTrainConfig"]

COMPARISON_PNG = "few_shot_vs_protonet.png"


@dataclass
class MetaNetModelConfig:
    """The two nets and the meta learners (``model:``), see :class:`metalearn_ext.nn.MetaNet`."""

    max_way: int = 20  # output units: the most ways served (train and every eval setting)
    hidden: int = 64  # conv channels
    depth: int = 5  # conv blocks (the paper's 5)
    embed: int = 64  # fc width: the key net's representation
    meta_hidden: int = 20  # MLP 2-20-20-1 and LSTM 2-20 of the meta learners
    p: float = 7.0  # gradient preprocessing
    fast_layers: int | None = None  # top layers with fast weights (None: all, the paper's)
    gradients: Literal["vmap", "loop"] = "vmap"  # per-example support gradients: one vmap call or a loop
    channels_last: bool = True  # NHWC convolutions: 1.9x faster evaluation on a CPU
    attention_scale: float = 1.0  # factor on the attention's cosines (1: the paper's)
    learn_attention_scale: bool = False  # train that factor (from attention_scale)
    center_keys: bool = False  # subtract the support keys' mean before the cosines (False: the paper's)
    anchor_fast_weights: float | None = None  # init: the fast weight a zero gradient gives (null: a seed-set offset)

    def check(self, section: str) -> None:
        check_positive(self, section, "hidden", "depth", "embed", "meta_hidden", "p", "attention_scale")
        if self.max_way < 2:
            raise ConfigError(f"config key '{section}.max_way': must be >= 2, got {self.max_way}")
        if self.fast_layers is not None and not 2 <= self.fast_layers <= self.depth + 2:
            raise ConfigError(f"config key '{section}.fast_layers': expected null or 2..{self.depth + 2} "
                              f"(depth + 2 layers), got {self.fast_layers}")


@dataclass
class MetaNetTrainConfig(TrainConfig):
    meta_batch: int = 1  # one episode per batch (the paper's)
    clip: float | None = 10.0  # the paper's gradient clip


@dataclass
class MetaNetEvalConfig(FewShotEvalConfig):
    """Few-shot accuracy per [ways, shots]; ``compare_with``: a ProtoNet run directory whose
    few_shot.json `metalearn plot` draws beside this run's."""

    settings: list[list[int]] = field(default_factory=lambda: [[5, 1], [20, 1]])  # the paper's Omniglot settings
    compare_with: str | None = None


@register_method
class MetaNetMethod(FewShotMethod):
    name = "metanet"
    description = "MetaNet: fast weights from per-example support gradients (one vmap call), attention over keys"
    tasks = ("episodes",)
    model_config = MetaNetModelConfig
    train_config = MetaNetTrainConfig
    eval_config = MetaNetEvalConfig
    plot_title = "MetaNet meta-training"

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        ways = max([cfg.task.n_way, *(w for w, _ in cfg.eval.settings)])
        if cfg.model.max_way < ways:
            raise ConfigError(f"config key 'model.max_way': {cfg.model.max_way} is fewer than the {ways} ways of "
                              f"task.n_way / eval.settings")

    def build_model(self, cfg, shapes: dict) -> MetaNet:
        m = cfg.model
        c, h, w = shapes["image_shape"]
        if h != w:
            raise ConfigError(f"MetaNet needs square images, the task gives {h}x{w}")
        return MetaNet(max_way=m.max_way, in_channels=c, image_size=h, hidden=m.hidden, depth=m.depth,
                       embed=m.embed, meta_hidden=m.meta_hidden, p=m.p, fast_layers=m.fast_layers,
                       gradients=m.gradients, channels_last=m.channels_last, attention_scale=m.attention_scale,
                       learn_attention_scale=m.learn_attention_scale, center_keys=m.center_keys,
                       anchor_fast_weights=m.anchor_fast_weights)

    def loss_options(self, cfg) -> dict:
        return {"n_way": cfg.task.n_way}

    def plot(self, run_dir, log) -> list[Path]:
        run_dir = Path(run_dir)
        paths = super().plot(run_dir, log)
        ours = run_dir / FEW_SHOT_JSON
        if ours.is_file():
            res = json.loads(ours.read_text())
            other = res["config"]["eval"].get("compare_with")
            if other is None:
                log(f"no ProtoNet run to compare with: set it by `metalearn eval {run_dir} "
                    f"--set eval.compare_with=RUN_DIR`")
            else:
                paths.append(plot_comparison(res, _protonet_results(Path(other)), run_dir / COMPARISON_PNG))
        return paths


def _protonet_results(run_dir: Path) -> dict:
    path = run_dir / FEW_SHOT_JSON
    if not path.is_file():
        raise ConfigError(f"eval.compare_with: {path} not found (run `metalearn eval {run_dir}` first)")
    res = json.loads(path.read_text())
    if res.get("method") != "protonet":
        raise ConfigError(f"eval.compare_with: {run_dir} is a {res.get('method')} run, not a protonet one")
    return res


def plot_comparison(ours: dict, protonet: dict, path: Path) -> Path:
    """Bars of few-shot accuracy with 95% intervals, MetaNet beside ProtoNet, for every
    (ways, shots) setting both evaluated -> ``path`` (PNG)."""
    from matplotlib.figure import Figure

    from metalearn_ext.train.plot import save_figure

    key = lambda r: (r["n_way"], r["k_shot"])  # noqa: E731
    theirs = {key(r): r for r in protonet["results"]}
    rows = [(r, theirs[key(r)]) for r in ours["results"] if key(r) in theirs]
    if not rows:
        raise ConfigError("eval.compare_with: the ProtoNet run was evaluated on none of this run's settings "
                          f"{[list(key(r)) for r in ours['results']]}")
    fig = Figure(figsize=(max(4.5, 1.6 + 1.4 * len(rows)), 3.6))
    ax = fig.add_subplot()
    for j, (name, color) in enumerate((("MetaNet", "C0"), ("ProtoNet", "C1"))):
        xs = [i + (j - 0.5) * 0.38 for i in range(len(rows))]
        means = [100 * pair[j]["mean"] for pair in rows]
        halves = [100 * pair[j]["half"] for pair in rows]
        ax.bar(xs, means, width=0.36, yerr=halves, capsize=3, color=color, label=name)
    ax.set_xticks(range(len(rows)), [f"{r['n_way']}-way {r['k_shot']}-shot" for r, _ in rows])
    ax.set_ylim(min(100 * min(p["mean"] for pair in rows for p in pair) - 10, 90), 100)
    ax.set_ylabel("held-out accuracy (%), 95% interval")
    ax.set_title(f"MetaNet ({ours['step']} steps) vs ProtoNet ({protonet['step']} steps)",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
