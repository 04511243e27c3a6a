"""N-way K-shot episodes: stacked shapes, remapped labels, correct images, no repeats,
seeding, disjoint splits, and bad input."""
import pytest
import torch

from metalearn_ext.data import EpisodeSampler, ImageDataset, split_classes

from .helpers import index_of, indexed_dataset


def test_shapes_labels_and_images_belong_to_their_classes():
    ds = indexed_dataset([20] * 12 + [25, 30])
    batch = EpisodeSampler(ds, n_way=5, k_shot=2, n_query=3, seed=0).sample(64)
    assert batch.support_images.shape == (64, 10, 1, 2, 2) and batch.query_images.shape == (64, 15, 1, 2, 2)
    assert batch.support_labels.dtype == torch.int64 and batch.classes.shape == (64, 5)
    assert torch.equal(batch.support_labels, torch.arange(5).repeat_interleave(2).expand(64, -1))
    assert torch.equal(batch.query_labels, torch.arange(5).repeat_interleave(3).expand(64, -1))
    sup, qry = index_of(batch.support_images), index_of(batch.query_images)
    assert torch.equal(ds.labels[sup], batch.classes.gather(1, batch.support_labels))
    assert torch.equal(ds.labels[qry], batch.classes.gather(1, batch.query_labels))
    everything = torch.cat([sup, qry], 1)
    assert all(row.unique().numel() == 25 for row in everything)  # no example twice in an episode
    assert all(row.unique().numel() == 5 for row in batch.classes)


def test_every_class_and_example_gets_drawn():
    ds = indexed_dataset([4, 5, 6, 7, 8, 9])
    batch = EpisodeSampler(ds, n_way=3, k_shot=2, n_query=2, seed=1).sample(500)
    assert batch.classes.unique().numel() == 6
    drawn = torch.cat([index_of(batch.support_images), index_of(batch.query_images)], 1).unique()
    assert drawn.numel() == len(ds)
    # Label order is random: class c is not always label 0.
    assert batch.classes[:, 0].unique().numel() == 6


def test_seeded_reproducible_and_generator_driven():
    ds = indexed_dataset([10] * 8)
    a = EpisodeSampler(ds, 4, 1, 2, seed=7).sample(5)
    b = EpisodeSampler(ds, 4, 1, 2, seed=7).sample(5)
    c = EpisodeSampler(ds, 4, 1, 2, seed=8).sample(5)
    assert torch.equal(a.support_images, b.support_images) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.classes, c.classes)
    d = EpisodeSampler(ds, 4, 1, 2, generator=torch.Generator().manual_seed(7)).sample(5)
    assert torch.equal(a.query_images, d.query_images)


def test_meta_splits_never_share_classes(omniglot_background):
    train, val, test = split_classes(omniglot_background, [150, 40, 52], seed=0)
    seen = []
    for part in (train, val, test):
        batch = EpisodeSampler(part, 5, 1, 15, seed=0).sample(200)
        seen.append({part.class_names[c] for c in batch.classes.unique().tolist()})
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_to_moves_every_tensor():
    batch = EpisodeSampler(indexed_dataset([3] * 3), 2, 1, 1).sample(2).to("cpu")
    assert batch.support_images.device.type == "cpu"


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_way=6, k_shot=1, n_query=1), "n_way=6 is more than the dataset's 5 classes"),
    (dict(n_way=2, k_shot=3, n_query=2), "k_shot \\+ n_query = 5 is more than the 4 examples of class 'class0'"),
    (dict(n_way=0, k_shot=1, n_query=1), "n_way"),
    (dict(n_way=2, k_shot=0, n_query=1), "k_shot"),
    (dict(n_way=2, k_shot=1, n_query=-1), "n_query"),
])
def test_bad_episode_shapes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(indexed_dataset([4, 9, 9, 9, 9]), **kwargs)


def test_empty_split_and_zero_episodes():
    empty = ImageDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64), ())
    with pytest.raises(ValueError, match="empty"):
        EpisodeSampler(empty, 1, 1, 0)
    with pytest.raises(ValueError, match="num_episodes"):
        EpisodeSampler(indexed_dataset([3] * 3), 2, 1, 1).sample(0)
