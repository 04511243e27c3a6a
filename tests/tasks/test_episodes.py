"""Task "episodes": held-out characters, rotations in training only, per-item seeds, shape
overrides, the digits' class split, bad input, and shapes() without data."""
import pytest
import torch

from metalearn_ext.config import ConfigError, section_from_dict
from metalearn_ext.data import EpisodeSampler
from metalearn_ext.tasks import TASKS, build_task, generator
from metalearn_ext.tasks.episodes import EpisodesTaskConfig, EpisodeTask
from metalearn_ext.tasks.seeds import STREAM, TEST

from .helpers import assert_same, assert_split_equals_whole


@pytest.fixture(scope="module")
def omniglot_task(omniglot_root) -> EpisodeTask:
    """192 training characters (x 4 rotations) and 50 held-out ones, as in the spec's field notes."""
    return build_task(EpisodesTaskConfig(root=omniglot_root, test_classes=50))


def character(name: str) -> str:
    return name.split("/rot")[0]


def test_registered_and_built_from_its_config():
    assert TASKS["episodes"].family == "episodes" and TASKS["episodes"].config is EpisodesTaskConfig
    assert isinstance(build_task(EpisodesTaskConfig(dataset="digits", rotations=False)), EpisodeTask)


def test_held_out_characters_are_never_trained_on_and_not_rotated(omniglot_task):
    train, test = omniglot_task.dataset("train"), omniglot_task.dataset("test")
    assert (train.num_classes, test.num_classes) == (192 * 4, 50)
    assert not {character(n) for n in train.class_names} & set(test.class_names)
    assert sum("/rot" in n for n in train.class_names) == 192 * 3
    assert not any("/rot" in n for n in test.class_names)
    # strokes = 1 on a 0 background, as everywhere in the package
    assert float(test.images.mean()) < 0.2 and float(test.images.amax()) == 1.0


def test_items_come_from_their_own_generators(omniglot_task):
    assert_split_equals_whole(omniglot_task, seed=3, step=5)
    assert_split_equals_whole(omniglot_task, seed=3, step=5, split="test", n_way=20, k_shot=5, n_query=2)
    # item i is exactly what the sampler draws from generator(seed, step, i, purpose)
    item = omniglot_task.sample([7], seed=3, step=5)
    ref = EpisodeSampler(omniglot_task.dataset("train"), 5, 1, 15, generator=generator(3, 5, 7, STREAM)).sample(1)
    assert_same(item, ref)
    item = omniglot_task.sample([7], seed=3, step=5, split="test")
    ref = EpisodeSampler(omniglot_task.dataset("test"), 5, 1, 15, generator=generator(3, 5, 7, TEST)).sample(1)
    assert_same(item, ref)
    assert not torch.equal(omniglot_task.sample([0], seed=3, step=5).classes,
                           omniglot_task.sample([0], seed=4, step=5).classes)


def test_shapes_and_overrides(omniglot_task):
    b = omniglot_task.sample(range(3), seed=0, step=0)
    assert b.support_images.shape == (3, 5, 1, 28, 28) and b.query_images.shape == (3, 75, 1, 28, 28)
    assert torch.equal(b.support_labels, torch.arange(5).expand(3, -1))
    b = omniglot_task.sample([0, 1], seed=0, step=0, split="test", n_way=20, k_shot=5, n_query=3)
    assert b.support_images.shape == (2, 100, 1, 28, 28) and b.query_labels.shape == (2, 60)
    assert b.classes.shape == (2, 20) and int(b.classes.max()) < 50
    assert omniglot_task.shapes() == {"image_shape": [1, 28, 28], "n_way": 5, "k_shot": 1, "n_query": 15}


def test_requests_too_large_for_the_split_name_the_number_and_the_split(omniglot_task):
    with pytest.raises(ValueError, match=r"n_way=51 is more than the dataset's 50 classes \(the 'test' split"):
        omniglot_task.sample([0], seed=0, step=0, split="test", n_way=51)
    with pytest.raises(ValueError, match=r"k_shot \+ n_query = 21 is more than the 20 examples .*the 'train' split"):
        omniglot_task.sample([0], seed=0, step=0, k_shot=5, n_query=16)
    with pytest.raises(ValueError, match="split"):
        omniglot_task.sample([0], seed=0, step=0, split="valid")
    with pytest.raises(ValueError, match="indices"):
        omniglot_task.sample([], seed=0, step=0)


def test_shapes_need_no_data_and_a_wrong_root_is_named(tmp_path):
    task = build_task(EpisodesTaskConfig(root=str(tmp_path / "nope"), image_size=20))
    assert task.shapes()["image_shape"] == [1, 20, 20]
    with pytest.raises(FileNotFoundError, match="nope"):
        task.sample([0], seed=0, step=0)


def test_digits_class_split():
    task = build_task(EpisodesTaskConfig(dataset="digits", rotations=False, image_size=16, split_seed=1))
    train, test = task.dataset("train"), task.dataset("test")
    assert (train.num_classes, test.num_classes) == (5, 5)
    assert not set(train.class_names) & set(test.class_names)
    assert train.images.shape[1:] == (1, 16, 16)
    b = task.sample(range(4), seed=0, step=0, split="test", k_shot=5, n_query=5)
    assert b.support_images.shape == (4, 25, 1, 16, 16)
    with pytest.raises(ValueError, match="n_way=6 .*'test' split of digits"):
        task.sample([0], seed=0, step=0, split="test", n_way=6)
    held_out_3 = build_task(EpisodesTaskConfig(dataset="digits", rotations=False, test_classes=3))
    assert held_out_3.dataset("test").num_classes == 3 and held_out_3.dataset("train").num_classes == 7


@pytest.mark.parametrize("values, key", [
    ({"n_way": 0}, "task.n_way"),
    ({"k_shot": -1}, "task.k_shot"),
    ({"dataset": "mnist"}, "task.dataset"),
    ({"dataset": "digits"}, "task.rotations"),  # rotations default to true: rotated digits are other digits
    ({"dataset": "digits", "rotations": False, "mirrors": True}, "task.mirrors"),
    ({"dataset": "digits", "rotations": False, "test_classes": 10}, "task.test_classes"),
    ({"dataset": "digits", "rotations": False, "root": "/data"}, "task.root"),
    ({"test_classes": 0}, "task.test_classes"),
])
def test_bad_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section_from_dict(EpisodesTaskConfig, values, "task")


def test_random_shift_moves_each_image_by_its_own_offset_and_shifts_in_zeros():
    from metalearn_ext.tasks.episodes import random_shift

    x = torch.zeros(64, 1, 7, 7)
    x[:, 0, 3, 3] = 1.0
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.equal(y.sum((-1, -2)), x.sum((-1, -2)))  # the pixel stays inside
    where = [tuple(int(v) - 3 for v in torch.nonzero(img[0])[0]) for img in y]
    assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in where) and len(set(where)) > 10
    edge = torch.zeros(1, 1, 4, 4)
    edge[0, 0, :, 0] = 1.0  # a column at the border: a shift to the left drops it, none wraps around
    outs = [random_shift(edge, 1, torch.Generator().manual_seed(s))[0, 0] for s in range(40)]
    assert all(float(o[:, 2:].sum()) == 0.0 for o in outs)  # nothing wraps around to the right edge
    assert {float(o.sum()) for o in outs} >= {0.0, 3.0, 4.0}  # shifted out, clipped vertically, kept
    assert random_shift(x, 0, torch.Generator()) is x


def test_shift_augments_training_episodes_only_and_reproducibly(omniglot_root):
    plain = build_task(EpisodesTaskConfig(root=omniglot_root, test_classes=50))
    shifted = build_task(EpisodesTaskConfig(root=omniglot_root, test_classes=50, shift=2))
    a, b = plain.sample(range(2), seed=1, step=3), shifted.sample(range(2), seed=1, step=3)
    assert torch.equal(a.classes, b.classes) and torch.equal(a.support_labels, b.support_labels)
    assert not torch.equal(a.support_images, b.support_images)
    assert torch.equal(b.support_images, shifted.sample(range(2), seed=1, step=3).support_images)
    assert torch.allclose(a.support_images.sum((-1, -2)), b.support_images.sum((-1, -2)), atol=1e-3)
    assert_same(plain.sample([0], seed=1, step=0, split="test"), shifted.sample([0], seed=1, step=0, split="test"))


@pytest.mark.parametrize("bad", [-1, 28, 1.5, True])
def test_shift_out_of_range_names_the_key(bad):
    with pytest.raises(ConfigError, match="task.shift"):
        section_from_dict(EpisodesTaskConfig, {"shift": bad}, "task")


def test_random_affine_rotates_about_the_centre_within_the_range():
    from metalearn_ext.tasks.episodes import random_affine

    x = torch.zeros(200, 1, 21, 21)
    x[:, 0, 10, 14] = 1.0  # a point 4 pixels right of the centre pixel (10, 10)
    y = random_affine(x, 30.0, 0.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    ys, xs = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    mass = y[:, 0].sum((-1, -2))
    cy, cx = (y[:, 0] * ys).sum((-1, -2)) / mass, (y[:, 0] * xs).sum((-1, -2)) / mass
    radius = torch.hypot(cy - 10, cx - 10)
    angle = torch.rad2deg(torch.atan2(cy - 10, cx - 10))
    assert torch.allclose(radius, torch.full_like(radius, 4.0), atol=0.35)  # rotation keeps the distance
    assert float(angle.abs().max()) <= 31.0 and float(angle.std()) > 10.0  # within ±30°, spread over it
    assert random_affine(x, 0.0, 0.0, torch.Generator()) is x


def test_random_affine_scales_within_the_range():
    from metalearn_ext.tasks.episodes import random_affine

    x = torch.zeros(200, 1, 21, 21)
    x[:, 0, 10, 16] = 1.0  # 6 pixels right of the centre
    y = random_affine(x, 0.0, 0.2, torch.Generator().manual_seed(1))
    xs = torch.arange(21.0)
    cx = (y[:, 0].sum(-2) * xs).sum(-1) / y[:, 0].sum((-1, -2))
    dist = cx - 10
    assert float(dist.min()) >= 6 * 0.8 - 0.3 and float(dist.max()) <= 6 * 1.2 + 0.3
    assert float(dist.max() - dist.min()) > 1.5  # factors spread over [0.8, 1.2]


def test_affine_augments_training_episodes_only_and_reproducibly(omniglot_root):
    plain = build_task(EpisodesTaskConfig(root=omniglot_root, test_classes=50))
    warped = build_task(EpisodesTaskConfig(root=omniglot_root, test_classes=50, rotate=10.0, scale=0.1))
    a, b = plain.sample(range(2), seed=1, step=3), warped.sample(range(2), seed=1, step=3)
    assert torch.equal(a.classes, b.classes) and not torch.equal(a.query_images, b.query_images)
    assert torch.equal(b.query_images, warped.sample(range(2), seed=1, step=3).query_images)
    assert_same(plain.sample([0], seed=1, step=0, split="test"), warped.sample([0], seed=1, step=0, split="test"))


@pytest.mark.parametrize("values, key", [({"rotate": -1.0}, "task.rotate"), ({"rotate": 181.0}, "task.rotate"),
                                         ({"scale": 1.0}, "task.scale"), ({"scale": -0.1}, "task.scale")])
def test_affine_out_of_range_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section_from_dict(EpisodesTaskConfig, values, "task")


def test_mirrors_double_the_training_characters_only(omniglot_root, omniglot_task):
    mirrored = build_task(EpisodesTaskConfig(root=omniglot_root, test_classes=50, mirrors=True))
    plain_train, train = omniglot_task.dataset("train"), mirrored.dataset("train")
    assert train.num_classes == 2 * plain_train.num_classes == 192 * 8
    assert train.class_names[::2] == plain_train.class_names
    assert all(n == f"{p}/mirror" for n, p in zip(train.class_names[1::2], plain_train.class_names))
    for c in (0, 5, 767):  # every drawing of class c, and of its mirror class 2c + 1 flipped back
        want = plain_train.images[plain_train.labels == c]
        assert torch.equal(train.images[train.labels == 2 * c], want)
        assert torch.equal(torch.flip(train.images[train.labels == 2 * c + 1], dims=(3,)), want)
        assert not torch.equal(train.images[train.labels == 2 * c + 1], want)
    test = mirrored.dataset("test")  # held-out characters untouched
    assert test.class_names == omniglot_task.dataset("test").class_names
    assert torch.equal(test.images, omniglot_task.dataset("test").images)
