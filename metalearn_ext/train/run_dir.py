"""Reading a finished (or interrupted) run back: the trained model for a user's own code, or the
whole trainer (model, task, config) for an evaluation protocol."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from metalearn_ext.config import ConfigError, apply_overrides
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint
from metalearn_ext.train.config import config_from_dict
from metalearn_ext.train.loop import CHECKPOINT, CONFIG, Trainer

__all__ = ["load_run", "load_trainer", "saved_config"]


def _payload(run_dir: str | Path) -> tuple[dict, object]:
    from metalearn_ext.methods import get_method

    path = Path(run_dir) / CHECKPOINT
    payload = load_checkpoint(path)
    try:
        method = get_method(payload["method"])
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{path}: {e}") from e
    return payload, method


def load_run(run_dir: str | Path) -> nn.Module:
    """The trained model of the run in ``run_dir``, in eval mode, its :class:`RunConfig` at ``.config``.

    Weights-only loading (nothing in the checkpoint is executed) and no data is read: the model is
    rebuilt from the saved config and task shapes. A run trained with ``train.ema`` > 0 gives its
    averaged weights. Few-shot models answer
    ``predict(support_x, support_y, query_x)``, online learners ``learn(inputs, labels)``.
    """
    payload, method = _payload(run_dir)
    cfg = config_from_dict(method, payload["config"])
    model = method.build_model(cfg, payload["shapes"])
    try:
        model.load_state_dict(payload["ema"] if "ema" in payload else payload["model"])  # train.ema: the average
    except RuntimeError as e:
        raise CheckpointError(f"{Path(run_dir) / CHECKPOINT} does not fit the {cfg.method} model: {e}") from e
    model.eval()
    model.config = cfg
    return model


def load_trainer(run_dir: str | Path, overrides: list[str] | None = None) -> Trainer:
    """The trainer of the run in ``run_dir`` (model in eval mode, holding the averaged weights of a run with
    ``train.ema`` > 0; task, config, step); ``overrides``
    may change ``eval.*`` keys only."""
    payload, method = _payload(run_dir)
    for item in overrides or []:
        if not item.strip().startswith("eval."):
            raise ConfigError(f"--set {item!r}: only eval.* keys can be changed for a trained run")
    cfg = config_from_dict(method, apply_overrides(payload["config"], overrides or []))
    trainer = Trainer(cfg)
    trainer.load_state_dict(payload, str(Path(run_dir) / CHECKPOINT))
    trainer.use_average()
    trainer.model.eval()
    return trainer


def saved_config(run_dir: str | Path) -> dict:
    """The run's config.yaml as nested dicts (what ``metalearn plot`` reads: no checkpoint needed)."""
    import yaml

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run directory")
    return yaml.safe_load(path.read_text()) or {}
