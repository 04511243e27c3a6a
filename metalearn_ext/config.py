"""Run configuration: typed sections (dataclasses), YAML files, ``--set key=value`` overrides.

A run's config is a :class:`RunConfig`: the method's name plus named sections (``model``, ``task``,
``train``, ``eval``), each a dataclass the method declares. Values are checked against the
fields' type hints (``int``, ``float``, ``bool``, ``str``, ``Optional[...]``, ``list[...]``,
``Literal[...]``); a section may add value checks in a ``check(self, section: str)`` method. Every
error is a :class:`ConfigError` naming the key (``train.lr``, ``task.n_way`` …), so a typo never
passes silently.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "RunConfig", "apply_overrides", "check_positive", "parse_overrides", "read_yaml",
           "section_from_dict"]


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key."""


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def check_type(key: str, value: Any, tp: Any) -> Any:
    """``value`` converted to ``tp`` where lossless (int -> float), else ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if value is None:
            raise ConfigError(f"config key {key!r}: expected {_type_name(inner[0])}, got null")
        return check_type(key, value, inner[0])
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ConfigError(f"config key {key!r}: must be one of {choices}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        return [check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML reads 1e-3 (no dot) as a string
    if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def section_from_dict(cls: type, values: dict | None, section: str) -> Any:
    """A validated instance of the section dataclass ``cls`` from ``values`` (missing keys: defaults)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config key {section!r}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        if k not in hints or k not in names:
            raise ConfigError(f"unknown config key '{section}.{k}' (known in {section!r}: {', '.join(names)})")
        kwargs[k] = check_type(f"{section}.{k}", v, hints[k])
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(section)
    return obj


def check_positive(obj: Any, section: str, *names: str) -> None:
    """ConfigError naming ``section.name`` for the first of ``names`` that is set and not > 0 (NaN too)."""
    for name in names:
        v = getattr(obj, name)
        if v is not None and not v > 0:
            raise ConfigError(f"config key '{section}.{name}': must be positive, got {v!r}")


def check_non_negative(obj: Any, section: str, *names: str) -> None:
    """ConfigError naming ``section.name`` for the first of ``names`` that is set and not >= 0 (NaN too)."""
    for name in names:
        v = getattr(obj, name)
        if v is not None and not v >= 0:
            raise ConfigError(f"config key '{section}.{name}': must be >= 0, got {v!r}")


class RunConfig:
    """The whole config of one run: ``method`` and its sections, reachable as attributes
    (``cfg.model``, ``cfg.task``, ``cfg.train``, ``cfg.eval``)."""

    def __init__(self, method: str, sections: dict[str, Any]) -> None:
        self.method = method
        self.sections = dict(sections)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"this {self.__dict__.get('method')} config has no section {name!r}")

    def to_dict(self) -> dict:
        """Plain nested dicts (YAML/JSON-safe): ``{"method": ..., section: {key: value}}``."""
        return {"method": self.method, **{k: dataclasses.asdict(v) for k, v in self.sections.items()}}

    def replace(self, **sections: Any) -> RunConfig:
        return RunConfig(self.method, {**self.sections, **sections})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"RunConfig({self.to_dict()!r})"


def parse_overrides(overrides: list[str]) -> list[tuple[str, str, Any]]:
    """``["train.steps=10", ...]`` -> ``[("train", "steps", 10), ...]``; values parsed as YAML."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. train.steps=100), got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set key {key.strip()!r}: expected section.name (e.g. train.steps)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key.strip()}: value {raw!r} is not valid YAML ({e})") from e
        out.append((parts[0], parts[1], value))
    return out


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """``d`` (nested dict of sections) with ``section.key=value`` overrides applied (a copy)."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (d or {}).items()}
    for section, name, value in parse_overrides(overrides):
        if section == "method":
            raise ConfigError("--set method=...: the method is chosen on the command line, not by --set")
        target = d.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"config key {section!r}: expected a mapping, got {target!r}")
        target[name] = value
    return d


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict; ConfigError if missing, unreadable or not a mapping."""
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file {str(path)!r} not found") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path}: not readable YAML ({e})") from e
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(d).__name__}")
    return d
