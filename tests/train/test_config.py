"""Configs: shipped YAML files load, overrides apply, bad keys and types name the key."""
import pytest

from metalearn_ext.train.config import ConfigError, config_from_dict, load_config, shipped_config_path
from metalearn_ext.train.tasks import make_task_sources


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_shipped_configs_load(name):
    assert shipped_config_path(name).is_file()
    cfg = load_config(name)
    assert cfg.model.state_size in (8, 16)


def test_overrides_apply_with_yaml_types():
    cfg = load_config("quick", ["train.steps=7", "model.hidden=[32, 16]", "train.lr=1e-2", "train.method=es",
                                "data.image_size=null"])
    assert cfg.train.steps == 7 and cfg.model.hidden == [32, 16] and cfg.train.lr == 0.01
    assert cfg.train.method == "es" and cfg.data.image_size is None and cfg.lr() == 0.01
    assert load_config("quick", ["train.lr=null", "train.method=es"]).lr() == 0.025


@pytest.mark.parametrize("d, key", [
    ({"modle": {}}, "'modle'"),
    ({"train": {"stepz": 3}}, "'train.stepz'"),
    ({"train": {"steps": "many"}}, "'train.steps'"),
    ({"train": {"steps": 2.5}}, "'train.steps'"),
    ({"model": {"prev_input": 1}}, "'model.prev_input'"),
    ({"model": {"hidden": 32}}, "'model.hidden'"),
    ({"model": {"hidden": [32, "x"]}}, "'model.hidden[1]'"),
    ({"model": {"feedback": "sideways"}}, "'model.feedback'"),
    ({"train": {"population": 7}}, "'train.population'"),
    ({"train": {"sigma": -1.0}}, "'train.sigma'"),
    ({"data": {"dataset": "imagenet"}}, "'data.dataset'"),
])
def test_bad_keys_and_values_name_the_key(d, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(d)


def test_bad_override_and_file(tmp_path):
    with pytest.raises(ConfigError, match="'train.nope'"):
        load_config("quick", ["train.nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("quick", ["train.steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_sizes_that_do_not_match_the_dataset_name_the_key():
    with pytest.raises(ConfigError, match="'data.num_classes'"):
        make_task_sources(config_from_dict({"data": {"num_classes": 11}}).data)
    with pytest.raises(ConfigError, match="'data.num_classes'"):
        make_task_sources(config_from_dict({"data": {"split": "classes", "test_classes": 3, "num_classes": 5}}).data)


def test_held_out_classes_split():
    train, test = make_task_sources(config_from_dict({"data": {"split": "classes", "test_classes": 3,
                                                               "num_classes": 3, "image_size": 4}}).data)
    assert train.input_dim == test.input_dim == 16
    assert train.sampler.index.num_classes == 7 and test.sampler.index.num_classes == 3
    x, y = test.streams([1, 2], 5)
    assert x.shape == (2, 5, 16) and y.shape == (2, 5) and int(y.max()) < 3
