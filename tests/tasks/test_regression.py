"""Tasks "sinusoid" and "gp": the MAML / CNP distributions, per-item seeds, splits that never share
a draw, overrides, and bad config."""
import math

import pytest
import torch

from metalearn_ext.config import ConfigError, section_from_dict
from metalearn_ext.data import GPBatch, sample_gp_curves, sample_sinusoid_tasks
from metalearn_ext.tasks import TASKS, build_task, generator
from metalearn_ext.tasks.regression import GPTaskConfig, SinusoidEpisodes, SinusoidTaskConfig
from metalearn_ext.tasks.seeds import STREAM

from .helpers import assert_split_equals_whole


def test_registered_as_regression_tasks():
    assert TASKS["sinusoid"].family == TASKS["gp"].family == "regression"


def test_sinusoid_support_and_query_lie_on_one_sinusoid_of_the_maml_ranges():
    task = build_task(SinusoidTaskConfig())
    b = task.sample(range(200), seed=0, step=0)
    assert isinstance(b, SinusoidEpisodes)
    assert b.support_x.shape == b.support_y.shape == (200, 10, 1) and b.query_x.shape == (200, 10, 1)
    for x, y in ((b.support_x, b.support_y), (b.query_x, b.query_y)):
        torch.testing.assert_close(y, b.amplitude[:, None, None] * torch.sin(x - b.phase[:, None, None]))
        assert float(x.min()) >= -5 and float(x.max()) <= 5
    assert 0.1 <= float(b.amplitude.min()) and float(b.amplitude.max()) <= 5
    assert 0 <= float(b.phase.min()) and float(b.phase.max()) <= math.pi
    assert task.shapes() == {"x_dim": 1, "y_dim": 1, "k_shot": 10, "n_query": 10}


def test_sinusoid_items_splits_and_overrides():
    task = build_task(SinusoidTaskConfig(k_shot=5))
    assert_split_equals_whole(task, seed=1, step=2)
    assert_split_equals_whole(task, seed=1, step=2, split="test", n_query=100)
    one = task.sample([3], seed=1, step=2)
    ref = sample_sinusoid_tasks(1, 15, generator=generator(1, 2, 3, STREAM))
    assert torch.equal(one.support_x, ref.x[:, :5]) and torch.equal(one.query_y, ref.y[:, 5:])
    # the same distribution in both splits, but never the same functions
    test = task.sample([3], seed=1, step=2, split="test")
    assert not torch.equal(one.amplitude, test.amplitude)
    b = task.sample([0, 1], seed=0, step=0, k_shot=3, n_query=100)
    assert b.support_x.shape == (2, 3, 1) and b.query_y.shape == (2, 100, 1)
    with pytest.raises(ValueError, match="k_shot"):
        task.sample([0], seed=0, step=0, k_shot=0)


def test_gp_curves_follow_the_config():
    task = build_task(GPTaskConfig())
    b = task.sample(range(64), seed=0, step=0)
    assert isinstance(b, GPBatch)
    assert b.context_x.shape == (64, 50, 1) and b.target_y.shape == (64, 100, 1) and b.context_mask.shape == (64, 50)
    assert 3 <= int(b.num_context.min()) and int(b.num_context.max()) <= 50
    assert bool((b.num_target > b.num_context).all()) and int((b.num_target - b.num_context).max()) <= 50
    assert (b.length_scale, b.signal_std, b.noise_var) == (0.4, 1.0, 2e-2)
    assert task.shapes() == {"x_dim": 1, "y_dim": 1, "max_context": 50, "max_target": 100}
    small = build_task(GPTaskConfig(min_context=2, max_context=4, min_extra_target=0, max_extra_target=3,
                                    length_scale=0.7, noise_var=0.1))
    b = small.sample(range(8), seed=0, step=0)
    assert b.context_x.shape == (8, 4, 1) and b.target_x.shape == (8, 7, 1)
    assert (b.length_scale, b.noise_var) == (0.7, 0.1)
    ref = sample_gp_curves(1, min_context=2, max_context=4, min_extra_target=0, max_extra_target=3, length_scale=0.7,
                           noise_var=0.1, generator=generator(0, 0, 5, STREAM))
    assert torch.equal(b.target_y[5:6], ref.target_y) and torch.equal(b.context_mask[5:6], ref.context_mask)


def test_gp_items_and_device_move():
    task = build_task(GPTaskConfig())
    assert_split_equals_whole(task, seed=2, step=7)
    assert_split_equals_whole(task, seed=2, step=7, split="test")
    b = task.sample([0, 1], seed=2, step=7)
    moved = b.to("cpu")
    assert torch.equal(moved.target_y, b.target_y) and moved.noise_var == b.noise_var


@pytest.mark.parametrize("cls, values, key", [
    (SinusoidTaskConfig, {"k_shot": 0}, "task.k_shot"),
    (SinusoidTaskConfig, {"n_query": -1}, "task.n_query"),
    (GPTaskConfig, {"min_context": 10, "max_context": 5}, "task.min_context"),
    (GPTaskConfig, {"min_extra_target": -1}, "task.min_extra_target"),
    (GPTaskConfig, {"length_scale": 0.0}, "task.length_scale"),
    (GPTaskConfig, {"noise_var": -1e-3}, "task.noise_var"),
])
def test_bad_config_names_the_key(cls, values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section_from_dict(cls, values, "task")
