"""Meta-training loops (ES, BPTT), checkpoints, metrics and the ``metalearn train`` command."""
from metalearn_ext.train.bptt import bptt_step
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalearn_ext.train.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, load_config
from metalearn_ext.train.es import es_step
from metalearn_ext.train.evaluate import evaluate_online
from metalearn_ext.train.runner import MetaTrainer, build_model, run_training

__all__ = ["CheckpointError", "Config", "ConfigError", "DataConfig", "MetaTrainer", "ModelConfig", "TrainConfig",
           "bptt_step", "build_model", "es_step", "evaluate_online", "load_checkpoint", "load_config",
           "run_training", "save_checkpoint"]
