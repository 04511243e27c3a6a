"""Meta-training configuration: dataclasses, YAML files, ``--set key=value`` overrides, validation.

Every error names the offending key (``train.lr``, ``model.feedback`` …) so a typo never passes
silently.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SHIPPED_CONFIGS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "shipped_config_path",
]

SHIPPED_CONFIGS = ("quick", "paper")


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key."""


@dataclass
class ModelConfig:
    """The VSML network (see :class:`metalearn_ext.nn.VSML`)."""

    hidden: list[int] = field(default_factory=list)  # hidden layer sizes; D and C come from the data
    state_size: int = 16
    msg_size: int = 8
    ticks: int = 2
    prev_input: bool = True
    feedback: str = "previous"  # "previous" | "extra_tick"
    scale_by_fan_in: bool = True
    forget_bias: float = 5.0
    input_bias: float = -5.0
    backend: str | None = None


@dataclass
class DataConfig:
    """Where the online-learning streams come from."""

    dataset: str = "digits"  # "digits" | "mnist" | "fashion-mnist"
    num_classes: int = 10  # classes per stream (a random subset, randomly permuted labels)
    image_size: int | None = None  # resize images first (None: keep)
    projection_dim: int | None = None  # random projection per stream (None: none)
    split: str = "examples"  # held-out tasks: "examples" (unseen samples) or "classes" (unseen classes)
    test_fraction: float = 0.2  # split="examples": fraction of each class held out
    test_classes: int = 3  # split="classes": classes held out
    split_seed: int = 0
    episode_length: int = 100
    root: str | None = None  # directory searched first for MNIST-style files


@dataclass
class TrainConfig:
    """The meta-training loop."""

    method: str = "bptt"  # "bptt" | "es"
    steps: int = 1000
    seed: int = 0
    lr: float | None = None  # None: 1e-3 for BPTT, 0.025 for ES (the paper's)
    # BPTT
    meta_batch: int = 16
    truncation: int | None = None  # steps per truncated-BPTT segment (None: the whole episode)
    clip: float = 25.0
    # ES
    population: int = 64  # members (antithetic pairs × 2)
    sigma: float = 0.05
    # run
    checkpoint_every: int = 100
    max_bad_steps: int = 5  # consecutive non-finite meta-losses before stopping
    num_threads: int | None = None  # torch intra-op threads (1 is fastest on busy small machines)
    eval_streams: int = 32  # held-out streams evaluated at the end
    progress: bool = True


@dataclass
class EvalConfig:
    """The meta-test (``metalearn eval``): unseen tasks, baselines, intervals."""

    episode_length: int | None = None  # meta-test episodes (None: data.episode_length)
    episodes: int = 64  # episodes per task set (the 95% intervals are over these; use >= 32)
    window: int = 100  # report the first / last `window` examples (first / last quarter if episodes are shorter)
    projection: bool = True  # also: the held-out tasks under a random orthogonal input projection per episode
    unseen_dataset: str | None = "fashion-mnist"  # a data set never meta-trained on (None: skip)
    lr_grid: list[float] = field(default_factory=lambda: [10 ** (k / 2) for k in range(-8, 1)])  # 1e-4 .. 1
    tune_episodes: int = 64  # meta-training episodes on which the baselines' learning rates are tuned
    mlp_hidden: int = 32  # the one-hidden-layer baseline's width
    rnn_hidden: int = 128  # the meta-RNN baseline's LSTM size
    rnn_steps: int = 3000  # its meta-training steps of train.meta_batch episodes (VSML's first ones, then more)
    rnn_lr: float = 1e-2  # at 3e-3 it stayed on the ln C plateau for 1,400+ steps on the 8x8 digits


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def lr(self) -> float:
        if self.train.lr is not None:
            return self.train.lr
        return 0.025 if self.train.method == "es" else 1e-3


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
_CHOICES = {
    "model.feedback": ("previous", "extra_tick"),
    "model.backend": (None, "reference", "cpp", "cuda", "triton"),
    "data.dataset": ("digits", "mnist", "fashion-mnist"),
    "data.split": ("examples", "classes"),
    "train.method": ("bptt", "es"),
    "eval.unseen_dataset": (None, "digits", "mnist", "fashion-mnist"),
}
_POSITIVE = {"model.state_size", "model.msg_size", "model.ticks", "data.num_classes", "data.image_size",
             "data.projection_dim", "data.episode_length", "data.test_classes", "train.steps",
             "train.meta_batch", "train.truncation", "train.population", "train.checkpoint_every",
             "train.max_bad_steps", "train.num_threads", "train.eval_streams", "train.lr", "train.sigma",
             "train.clip", "eval.episode_length", "eval.window", "eval.tune_episodes", "eval.mlp_hidden",
             "eval.rnn_hidden", "eval.rnn_steps", "eval.rnn_lr"}


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """``value`` converted to ``tp`` where lossless (int -> float), else ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner[0])
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML reads 1e-3 (no dot) as a string
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"config key {key!r}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def config_from_dict(d: dict | None) -> Config:
    """A validated :class:`Config` from nested dicts (sections model / data / train / eval)."""
    d = d or {}
    if not isinstance(d, dict):
        raise ConfigError(f"config must be a mapping of sections {tuple(_SECTIONS)}, got {type(d).__name__}")
    cfg = Config()
    for section, values in d.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config key {section!r} (sections: {', '.join(_SECTIONS)})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config key {section!r}: expected a mapping, got {values!r}")
        target = getattr(cfg, section)
        hints = typing.get_type_hints(type(target))
        for k, v in values.items():
            key = f"{section}.{k}"
            if k not in hints:
                known = ", ".join(f.name for f in dataclasses.fields(target))
                raise ConfigError(f"unknown config key {key!r} (known in {section!r}: {known})")
            setattr(target, k, _check_type(key, v, hints[k]))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Value checks beyond types (choices, positivity, consistency); raises ConfigError naming the key."""
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        v = getattr(getattr(cfg, section), name)
        if v not in choices:
            raise ConfigError(f"config key {key!r}: must be one of {choices}, got {v!r}")
    for key in _POSITIVE:
        section, name = key.split(".")
        v = getattr(getattr(cfg, section), name)
        if v is not None and v <= 0:
            raise ConfigError(f"config key {key!r}: must be positive, got {v!r}")
    if any(h < 1 for h in cfg.model.hidden):
        raise ConfigError(f"config key 'model.hidden': sizes must be >= 1, got {cfg.model.hidden}")
    if cfg.model.msg_size < 2:
        raise ConfigError(f"config key 'model.msg_size': must be >= 2 (error and label channels), got "
                          f"{cfg.model.msg_size}")
    if not 0.0 < cfg.data.test_fraction < 1.0:
        raise ConfigError(f"config key 'data.test_fraction': must be in (0, 1), got {cfg.data.test_fraction}")
    if cfg.eval.episodes < 2:
        raise ConfigError(f"config key 'eval.episodes': must be >= 2 (intervals over episodes), got "
                          f"{cfg.eval.episodes}")
    if not cfg.eval.lr_grid or min(cfg.eval.lr_grid) <= 0:
        raise ConfigError(f"config key 'eval.lr_grid': must be a non-empty list of positive learning rates, got "
                          f"{cfg.eval.lr_grid}")
    if cfg.train.population % 2:
        raise ConfigError(f"config key 'train.population': must be even (antithetic pairs), got "
                          f"{cfg.train.population}")


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.steps=100), got {item!r}")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set key {key!r}: expected section.name with section in {tuple(_SECTIONS)}")
    return parts, yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """``d`` (nested dict) with ``section.key=value`` overrides; values parsed as YAML scalars/lists."""
    d = {k: dict(v or {}) for k, v in (d or {}).items()}
    for item in overrides:
        (section, name), value = _parse_override(item)
        d.setdefault(section, {})[name] = value
    return d


def shipped_config_path(name: str) -> Path:
    """Path of a config shipped in ``metalearn_ext/configs`` (``quick`` or ``paper``)."""
    return Path(str(resources.files("metalearn_ext.configs").joinpath(f"{name}.yaml")))


def load_config(path_or_name: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (or a shipped one by name; None: ``quick``) and apply overrides."""
    path_or_name = path_or_name or "quick"
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in SHIPPED_CONFIGS:
        path = shipped_config_path(str(path_or_name))
    if not path.exists():
        raise ConfigError(f"config file {str(path_or_name)!r} not found (shipped: {', '.join(SHIPPED_CONFIGS)})")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({e})") from e
    return config_from_dict(apply_overrides(d or {}, overrides or []))
