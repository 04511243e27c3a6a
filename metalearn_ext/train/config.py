"""A method's run config from a shipped name or a YAML file, ``--task`` and ``--set`` overrides.

Shipped configs live in ``metalearn_ext/configs/<method>/<name>.yaml``. A config file holds the
sections the method declares (``model``, ``task``, ``train``, ``eval``); ``task.name`` picks the
task and with it the task section's keys.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from metalearn_ext.config import ConfigError, RunConfig, apply_overrides, read_yaml, section_from_dict

__all__ = ["RESUME_CHANGEABLE", "config_for_resume", "config_from_dict", "load_config", "resolve_config_path"]

# keys a resumed run may change: they do not change what is computed
RESUME_CHANGEABLE = {"train.steps", "train.progress", "train.num_threads", "train.checkpoint_every"}


def _other_methods_with(method, section: str, key: str) -> list[str]:
    from metalearn_ext.methods import list_methods

    out = []
    for name, m in list_methods().items():
        if name == method.name:
            continue
        for task in m.tasks:
            cls = m.sections(task).get(section)
            if cls is not None and key in {f.name for f in dataclasses.fields(cls)}:
                out.append(name)
                break
    return out


def config_from_dict(method, d: dict | None) -> RunConfig:
    """A validated :class:`RunConfig` of ``method`` from nested dicts; errors name the key."""
    d = dict(d or {})
    declared = d.pop("method", method.name)
    if declared != method.name:
        raise ConfigError(f"config key 'method': this config is for {declared!r}, not {method.name!r}")
    task_section = d.get("task") or {}
    if not isinstance(task_section, dict):
        raise ConfigError(f"config key 'task': expected a mapping, got {task_section!r}")
    task = task_section.get("name") or method.tasks[0]
    if task not in method.tasks:
        raise ConfigError(f"config key 'task.name': {method.name} trains on {', '.join(method.tasks)}, got {task!r}")
    classes = method.sections(task)
    for section in d:
        if section not in classes:
            raise ConfigError(f"unknown config key {section!r} for {method.name} (sections: {', '.join(classes)})")
    sections = {}
    for section, cls in classes.items():
        raw = d.get(section)
        values = dict(raw) if isinstance(raw, dict) else ({} if raw is None else raw)
        if section == "task":
            values["name"] = task
        try:
            sections[section] = section_from_dict(cls, values, section)
        except ConfigError as e:
            if str(e).startswith("unknown config key"):
                key = str(e).split("'")[1].split(".", 1)[1]
                others = _other_methods_with(method, section, key)
                if others:
                    raise ConfigError(f"{e}; '{section}.{key}' is a key of {', '.join(others)}, not of "
                                      f"{method.name}") from None
            raise
    cfg = RunConfig(method.name, sections)
    method.check_config(cfg)
    return cfg


def resolve_config_path(method, config: str | Path | None, task: str | None) -> Path:
    """The YAML file for ``--config`` (a path, or a shipped name; None: the task's default)."""
    if config is None:
        config = method.default_configs.get(task or method.tasks[0], "quick")
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found")
        return path
    shipped = method.configs_dir() / f"{config}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"no config {str(config)!r} for {method.name}: neither a file nor a shipped config "
                          f"(shipped: {', '.join(method.shipped_configs()) or 'none'})")
    return shipped


def load_config(method, config: str | Path | None = None, overrides: list[str] | None = None, *,
                task: str | None = None) -> RunConfig:
    """The run config of ``method`` from ``config`` (file or shipped name), ``task`` and overrides."""
    if task is not None and task not in method.tasks:
        raise ConfigError(f"--task {task!r}: {method.name} trains on {', '.join(method.tasks)}")
    d = read_yaml(resolve_config_path(method, config, task))
    if task is not None:
        section = d.setdefault("task", {}) or {}
        if section.get("name") not in (None, task):
            raise ConfigError(f"--task {task!r}: the config {config!r} is for task {section['name']!r}")
        d["task"] = {**section, "name": task}
    return config_from_dict(method, apply_overrides(d, overrides or []))


def _flatten(d: dict) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, sec in d.items() if isinstance(sec, dict) for k, v in sec.items()}


def config_for_resume(method, saved: dict, overrides: list[str] | None) -> RunConfig:
    """The saved config of a run with ``overrides`` that a resume may apply (``train.steps`` to
    extend it, and keys that do not change the computation); any other change is an error."""
    cfg = config_from_dict(method, apply_overrides(saved, overrides or []))
    before, after = _flatten(config_from_dict(method, saved).to_dict()), _flatten(cfg.to_dict())
    changed = sorted(k for k in after if before.get(k) != after[k] and k not in RESUME_CHANGEABLE
                     and not k.startswith("eval."))
    if changed:
        raise ConfigError(f"--resume continues the run with its own config; these keys would change it: "
                          f"{', '.join(changed)} (only {', '.join(sorted(RESUME_CHANGEABLE))} and eval.* may change)")
    return cfg
