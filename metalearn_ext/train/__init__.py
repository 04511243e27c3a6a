"""Meta-training loops (ES, BPTT), checkpoints, metrics, the meta-test against baselines, plots and the
``metalearn train | eval | plot | demo`` commands."""
from metalearn_ext.train.baselines import online_baseline
from metalearn_ext.train.bptt import bptt_step
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalearn_ext.train.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, load_config
from metalearn_ext.train.es import es_step
from metalearn_ext.train.evaluate import evaluate_online
from metalearn_ext.train.meta_rnn import train_meta_rnn
from metalearn_ext.train.meta_test import format_table, run_meta_test
from metalearn_ext.train.plot import plot_run
from metalearn_ext.train.runner import MetaTrainer, build_model, run_training

__all__ = ["CheckpointError", "Config", "ConfigError", "DataConfig", "MetaTrainer", "ModelConfig", "TrainConfig",
           "bptt_step", "build_model", "es_step", "evaluate_online", "format_table", "load_checkpoint", "load_config",
           "online_baseline", "plot_run", "run_meta_test", "run_training", "save_checkpoint", "train_meta_rnn"]
