"""Small configs for fast meta-training tests."""
from metalearn_ext.train.config import config_from_dict


def tiny_config(**sections):
    """3-class streams of 4×4 digits, one layer 16 -> 3, N = 4; a meta-step takes a few ms."""
    d = {
        "model": {"state_size": 4, "msg_size": 4},
        "data": {"num_classes": 3, "image_size": 4, "episode_length": 8},
        "train": {"steps": 4, "meta_batch": 4, "population": 8, "checkpoint_every": 2, "eval_streams": 4,
                  "progress": False, "num_threads": 1},
    }
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return config_from_dict(d)
