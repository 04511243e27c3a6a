"""Task "image": pixels as points (coordinates in [−1, 1], intensities), context fractions, targets
that include the context, held-out classes at test time, per-item seeds; the NP view of
sinusoids; bad config."""
import pytest
import torch

from metalearn_ext.config import ConfigError, section_from_dict
from metalearn_ext.tasks import TASKS, build_task
from metalearn_ext.tasks.context_target import from_support_query
from metalearn_ext.tasks.image_completion import ImageCompletionTaskConfig, pixel_coordinates

from .helpers import assert_split_equals_whole


def test_pixels_as_points_on_the_digits():
    assert TASKS["image"].family == "regression"
    task = build_task(ImageCompletionTaskConfig(dataset="digits", min_context_fraction=0.05, max_context_fraction=0.25))
    assert task.shapes() == {"x_dim": 2, "y_dim": 1, "image_size": 8, "max_context": 16, "max_target": 64}
    b = task.sample(range(32), seed=0, step=0)
    assert b.context_x.shape == (32, 16, 2) and b.context_y.shape == (32, 16, 1) and b.target_x.shape == (32, 64, 2)
    assert b.images.shape == (32, 1, 8, 8) and bool(b.target_mask.all()) and bool((b.num_target == 64).all())
    assert 3 <= int(b.num_context.min()) and int(b.num_context.max()) <= 16 and b.num_context.unique().numel() > 3
    coords = pixel_coordinates(8)
    assert float(coords.min()) == -1.0 and float(coords.max()) == 1.0
    for i in range(32):
        n = int(b.num_context[i])
        # targets are a permutation of every pixel, starting with the context
        assert torch.equal(b.context_x[i, :n], b.target_x[i, :n]) and torch.equal(b.context_y[i, :n], b.target_y[i, :n])
        assert not b.context_x[i, n:].any() and torch.equal(b.context_mask[i], torch.arange(16) < n)
        rows = ((b.target_x[i, :, 0] + 1) * 3.5).round().long()
        cols = ((b.target_x[i, :, 1] + 1) * 3.5).round().long()
        assert torch.equal(b.images[i, 0, rows, cols], b.target_y[i, :, 0])
        assert (rows * 8 + cols).unique().numel() == 64


def test_held_out_digits_items_and_splits():
    task = build_task(ImageCompletionTaskConfig(dataset="digits"))
    train, test = task.images.dataset("train"), task.images.dataset("test")
    train_imgs = {tuple(x.flatten().tolist()) for x in train.images}
    b = task.sample(range(20), seed=0, step=0, split="test")
    assert not any(tuple(x.flatten().tolist()) in train_imgs for x in b.images)
    assert len(test) > 0 and len(train) > 0
    assert_split_equals_whole(task, seed=1, step=3)
    assert_split_equals_whole(task, seed=1, step=3, split="test")


def test_omniglot_28px_held_out_characters(omniglot_root):
    task = build_task(ImageCompletionTaskConfig(root=omniglot_root, max_target=500))
    b = task.sample(range(4), seed=0, step=0, split="test")
    assert b.images.shape == (4, 1, 28, 28) and b.target_x.shape == (4, 500, 2) and b.context_x.shape == (4, 392, 2)
    assert task.shapes()["max_context"] == 392
    assert task.images.dataset("test").num_classes > 0


def test_sinusoids_as_context_and_targets():
    b = build_task(TASKS["sinusoid"].config(k_shot=5, n_query=7)).sample(range(3), seed=0, step=0)
    ct = from_support_query(b.support_x, b.support_y, b.query_x, b.query_y)
    assert ct.context_x.shape == (3, 5, 1) and ct.target_y.shape == (3, 12, 1) and bool(ct.context_mask.all())
    assert torch.equal(ct.target_x[:, :5], b.support_x) and torch.equal(ct.target_y[:, 5:], b.query_y)
    assert ct.num_context.tolist() == [5, 5, 5] and ct.num_target.tolist() == [12, 12, 12]


@pytest.mark.parametrize("values, key", [
    ({"min_context_fraction": 0.6, "max_context_fraction": 0.5}, "task.min_context_fraction"),
    ({"max_context_fraction": 1.5}, "task.min_context_fraction"),
    ({"dataset": "digits", "max_target": 10}, "task.max_target"),
    ({"dataset": "digits", "root": "/x"}, "task.root"),
    ({"image_size": 0}, "task.image_size"),
    ({"dataset": "mnist"}, "task.dataset"),
])
def test_bad_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section_from_dict(ImageCompletionTaskConfig, values, "task")
