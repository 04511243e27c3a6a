"""Configs: shipped YAML files load, overrides apply, bad keys and types name the key."""
import pytest
import torch

from metalearn_ext.config import ConfigError
from metalearn_ext.methods import get_method
from metalearn_ext.tasks.streams import StreamTask
from metalearn_ext.train.config import config_from_dict, load_config

VSML = get_method("vsml")


def _cfg(d):
    return config_from_dict(VSML, d)


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_shipped_configs_load(name):
    assert name in VSML.shipped_configs()
    cfg = load_config(VSML, name)
    assert cfg.model.state_size in (8, 16) and cfg.task.name == "streams"


def test_overrides_apply_with_yaml_types():
    cfg = load_config(VSML, "quick", ["train.steps=7", "model.hidden=[32, 16]", "train.lr=1e-2",
                                      "train.optimizer=es", "task.image_size=null"])
    assert cfg.train.steps == 7 and cfg.model.hidden == [32, 16] and cfg.train.lr == 0.01
    assert cfg.train.optimizer == "es" and cfg.task.image_size is None
    assert load_config(VSML, "quick", ["train.lr=null", "train.optimizer=es"]).train.lr == 0.025
    assert load_config(VSML, "quick", ["train.lr=null"]).train.lr == 1e-3


@pytest.mark.parametrize("d, key", [
    ({"modle": {}}, "'modle'"),
    ({"train": {"stepz": 3}}, "'train.stepz'"),
    ({"train": {"steps": "many"}}, "'train.steps'"),
    ({"train": {"steps": 2.5}}, "'train.steps'"),
    ({"train": {"optimizer": "sgd"}}, "'train.optimizer'"),
    ({"model": {"prev_input": 1}}, "'model.prev_input'"),
    ({"model": {"hidden": 32}}, "'model.hidden'"),
    ({"model": {"hidden": [32, "x"]}}, "'model.hidden[1]'"),
    ({"model": {"feedback": "sideways"}}, "'model.feedback'"),
    ({"model": {"backend": "gpu"}}, "'model.backend'"),
    ({"model": {"msg_size": 1}}, "'model.msg_size'"),
    ({"train": {"population": 7}}, "'train.population'"),
    ({"train": {"sigma": -1.0}}, "'train.sigma'"),
    ({"task": {"dataset": "imagenet"}}, "'task.dataset'"),
    ({"task": {"name": "episodes"}}, "'task.name'"),
    ({"task": {"root": "/somewhere"}}, "'task.root'"),
    ({"method": "maml"}, "'method'"),
])
def test_bad_keys_and_values_name_the_key(d, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        _cfg(d)


def test_bad_override_and_file(tmp_path):
    with pytest.raises(ConfigError, match="'train.nope'"):
        load_config(VSML, "quick", ["train.nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(VSML, "quick", ["train.steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(VSML, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="shipped: paper, quick"):
        load_config(VSML, "quik")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not readable YAML"):
        load_config(VSML, str(bad))
    with pytest.raises(ConfigError, match="--task 'sinusoid'"):
        load_config(VSML, "quick", task="sinusoid")


def test_sizes_that_do_not_match_the_dataset_name_the_key():
    with pytest.raises(ConfigError, match="'task.num_classes'"):
        StreamTask(_cfg({"task": {"num_classes": 11}}).task)
    with pytest.raises(ConfigError, match="'task.num_classes'"):
        StreamTask(_cfg({"task": {"split": "classes", "test_classes": 3, "num_classes": 5}}).task)


def test_held_out_classes_split():
    task = StreamTask(_cfg({"task": {"split": "classes", "test_classes": 3, "num_classes": 3, "image_size": 4}}).task)
    assert task.train.input_dim == task.test.input_dim == 16
    assert task.train.sampler.index.num_classes == 7 and task.test.sampler.index.num_classes == 3
    x, y = task.test.streams([1, 2], 5)
    assert x.shape == (2, 5, 16) and y.shape == (2, 5) and int(y.max()) < 3


def test_streams_split_by_index_like_one_draw():
    task = StreamTask(_cfg({"task": {"num_classes": 3, "image_size": 4}}).task)
    x, y = task.sample(range(4), seed=1, step=2, length=6)
    x1, y1 = task.sample(range(2), seed=1, step=2, length=6)
    x2, y2 = task.sample(range(2, 4), seed=1, step=2, length=6)
    assert (x == torch.cat([x1, x2])).all() and (y == torch.cat([y1, y2])).all()
    assert not (task.sample(range(4), seed=1, step=3, length=6)[0] == x).all()


def test_blurs_linear_config_is_quick_with_one_layer_and_50_step_unrolls():
    blur = get_method("blur")
    assert {"quick", "linear"} <= set(blur.shipped_configs())
    quick, linear = load_config(blur, "quick"), load_config(blur, "linear")
    assert linear.model.hidden == [] and linear.train.unroll == 50 and linear.task.steps >= 50
    assert linear.train.steps == quick.train.steps and linear.model.states == quick.model.states


@pytest.mark.parametrize("method, config, override, key", [
    ("blur", "quick", "train.unroll_increment=-1", "train.unroll_increment"),
    ("blur", "quick", "train.eval_tasks=-1", "train.eval_tasks"),
    ("protonet", "quick", "eval.check_episodes=-1", "eval.check_episodes"),
    ("mann", "quick", "eval.check_episodes=-1", "eval.check_episodes"),
    ("cnp", "gp", "eval.check_curves=-1", "eval.check_curves"),
    ("protonet", "quick", "train.weight_decay=.nan", "train.weight_decay"),
    ("protonet", "quick", "train.lr=.nan", "train.lr"),  # NaN is neither positive nor >= 0
])
def test_negative_or_nan_counts_and_rates_name_the_key(method, config, override, key):
    with pytest.raises(ConfigError, match=f"'{key}': must be"):
        load_config(get_method(method), config, [override])
    if key != "train.lr":  # 0 itself is allowed where >= 0 is asked
        load_config(get_method(method), config, [f"{key}=0"])
