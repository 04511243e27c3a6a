"""Small VSML configs for fast meta-training tests (the run loop is the same for every method)."""
from metalearn_ext.methods import get_method
from metalearn_ext.train.config import config_from_dict


def tiny_config(**sections):
    """3-class streams of 4×4 digits, one layer 16 -> 3, N = 4; a meta-step takes a few ms."""
    d = {
        "model": {"state_size": 4, "msg_size": 4},
        "task": {"num_classes": 3, "image_size": 4, "episode_length": 8},
        "train": {"steps": 4, "meta_batch": 4, "population": 8, "checkpoint_every": 2, "eval_streams": 4,
                  "progress": False, "num_threads": 1},
    }
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return config_from_dict(get_method("vsml"), d)


# The same tiny setup as --set overrides (for the CLI), with a meta-test sized to match.
TINY_SETS = ["model.state_size=4", "model.msg_size=4", "task.num_classes=3", "task.image_size=4",
             "task.episode_length=8", "train.steps=3", "train.meta_batch=4", "train.eval_streams=4",
             "train.progress=false", "train.num_threads=1"]
TINY_EVAL_SETS = ["eval.episodes=4", "eval.episode_length=12", "eval.lr_grid=[0.01, 0.1, 1.0]",
                  "eval.tune_episodes=4", "eval.mlp_hidden=4", "eval.rnn_hidden=8", "eval.rnn_steps=3"]


def cli(argv):
    """Run ``metalearn ARGV`` in this process; returns the exit code."""
    from metalearn_ext.cli import main

    return main(argv)
