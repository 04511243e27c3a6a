"""Task "label-offset" (MANN): episode layout, held-out characters, per-item seeds, bad input."""
import pytest
import torch

from metalearn_ext.config import ConfigError, section_from_dict
from metalearn_ext.data import LabelOffsetSampler
from metalearn_ext.tasks import TASKS, build_task, generator
from metalearn_ext.tasks.label_offset import LabelOffsetTask, LabelOffsetTaskConfig
from metalearn_ext.tasks.seeds import TEST

from .helpers import assert_same, assert_split_equals_whole


@pytest.fixture(scope="module")
def task(omniglot_root) -> LabelOffsetTask:
    return build_task(LabelOffsetTaskConfig(root=omniglot_root, test_classes=50))


def test_registered_with_the_spec_defaults():
    assert TASKS["label-offset"].family == "label_offset"
    cfg = LabelOffsetTaskConfig()
    assert (cfg.image_size, cfg.n_way, cfg.examples_per_class, cfg.rotations) == (20, 5, 10, True)
    assert build_task(cfg).shapes() == {"image_shape": [1, 20, 20], "image_dim": 400, "input_dim": 405, "n_way": 5,
                                        "examples_per_class": 10, "length": 50}


def test_episodes_show_each_class_ten_times_with_the_previous_label(task):
    b = task.sample(range(3), seed=0, step=0)
    assert b.inputs.shape == (3, 50, 405) and b.labels.shape == b.instance.shape == (3, 50)
    assert all(torch.equal(torch.bincount(row, minlength=5), torch.full((5,), 10)) for row in b.labels)
    assert torch.equal(b.inputs[:, 1:, 400:].argmax(-1), b.labels[:, :-1])
    assert float(b.inputs[:, 0, 400:].abs().sum()) == 0
    assert sorted(b.instance[0].tolist()) == sorted(list(range(10)) * 5)


def test_held_out_characters_and_items(task):
    train, test = task.dataset("train"), task.dataset("test")
    assert (train.num_classes, test.num_classes) == (192 * 4, 50)
    assert not {n.split("/rot")[0] for n in train.class_names} & set(test.class_names)
    assert_split_equals_whole(task, seed=0, step=3)
    item = task.sample([4], seed=0, step=3, split="test")
    assert_same(item, LabelOffsetSampler(test, 5, 10, generator=generator(0, 3, 4, TEST)).sample(1))
    b = task.sample([0, 1], seed=0, step=0, split="test", n_way=15, examples_per_class=4)
    assert b.inputs.shape == (2, 60, 415) and int(b.classes.max()) < 50


def test_requests_too_large_for_the_split(task):
    with pytest.raises(ValueError, match=r"n_way=51 .*50 classes of the 'test' split"):
        task.sample([0], seed=0, step=0, split="test", n_way=51)
    with pytest.raises(ValueError, match=r"examples_per_class=21 .*20 drawings per class of the 'train' split"):
        task.sample([0], seed=0, step=0, examples_per_class=21)


@pytest.mark.parametrize("values, key", [({"n_way": 0}, "task.n_way"), ({"examples_per_class": 0},
                                         "task.examples_per_class"), ({"image_size": -20}, "task.image_size")])
def test_bad_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section_from_dict(LabelOffsetTaskConfig, values, "task")


def test_shift_moves_training_images_only_reproducibly_and_keeps_the_labels(omniglot_root, task):
    shifted = build_task(LabelOffsetTaskConfig(root=omniglot_root, test_classes=50, shift=2))
    a, b = task.sample(range(2), seed=1, step=3), shifted.sample(range(2), seed=1, step=3)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.classes, b.classes)
    assert torch.equal(a.inputs[..., 400:], b.inputs[..., 400:])  # the previous labels are not moved
    assert not torch.equal(a.inputs[..., :400], b.inputs[..., :400])
    assert torch.equal(b.inputs, shifted.sample(range(2), seed=1, step=3).inputs)
    # a shift by (dy, dx) of each 20x20 drawing: some offset in [-2, 2]^2 maps a's image onto b's
    img_a = a.inputs[0, :, :400].reshape(50, 20, 20)
    img_b = b.inputs[0, :, :400].reshape(50, 20, 20)
    pad = torch.nn.functional.pad(img_a, (2, 2, 2, 2))
    for s in range(50):
        assert any(torch.equal(pad[s, 2 - dy:22 - dy, 2 - dx:22 - dx], img_b[s])
                   for dy in range(-2, 3) for dx in range(-2, 3))
    assert_same(task.sample([0], seed=1, step=0, split="test"), shifted.sample([0], seed=1, step=0, split="test"))


@pytest.mark.parametrize("bad", [-1, 20, 1.5, True])
def test_shift_out_of_range_names_the_key(bad):
    with pytest.raises(ConfigError, match="task.shift"):
        section_from_dict(LabelOffsetTaskConfig, {"shift": bad}, "task")


def test_mirrors_add_mirrored_training_characters_and_leave_the_held_out_ones(omniglot_root, task):
    mirrored = build_task(LabelOffsetTaskConfig(root=omniglot_root, test_classes=50, mirrors=True))
    plain, train = task.dataset("train"), mirrored.dataset("train")
    assert train.num_classes == 2 * plain.num_classes == 192 * 8
    assert all(n == f"{p}/mirror" for n, p in zip(train.class_names[1::2], plain.class_names))
    want = plain.images[plain.labels == 7]
    assert torch.equal(torch.flip(train.images[train.labels == 15], dims=(3,)), want)
    assert torch.equal(mirrored.dataset("test").images, task.dataset("test").images)
    assert_same(task.sample([0], seed=1, step=0, split="test"), mirrored.sample([0], seed=1, step=0, split="test"))
    assert mirrored.sample(range(2), seed=1, step=3).inputs.shape == task.sample(range(2), seed=1, step=3).inputs.shape
