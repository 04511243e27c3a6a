"""The run loop for every method (checkpoints, resume, signals, metrics, progress, torch.distributed)
and the two meta-optimizers, gradient and ES, written against the method interface."""
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalearn_ext.train.config import config_from_dict, load_config
from metalearn_ext.train.es import es_gradient, es_step
from metalearn_ext.train.gradient import gradient_step
from metalearn_ext.train.loop import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, Trainer, resume_config, run_training
from metalearn_ext.train.run_dir import load_run, load_trainer
from metalearn_ext.train.step import StepResult

__all__ = ["EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_OK", "CheckpointError", "StepResult", "Trainer",
           "config_from_dict", "es_gradient", "es_step", "gradient_step", "load_checkpoint", "load_config",
           "load_run", "load_trainer", "resume_config", "run_training", "save_checkpoint"]
