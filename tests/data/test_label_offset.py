"""MANN label-offset episodes: (x_s, onehot(y_{s-1})), labels shuffled per episode."""
import pytest
import torch
import torch.nn.functional as F

from metalearn_ext.data import LabelOffsetSampler, load_omniglot

from .helpers import index_of, indexed_dataset


def test_inputs_carry_the_previous_label_and_the_right_images():
    ds = indexed_dataset([12] * 9)
    b = LabelOffsetSampler(ds, n_way=5, examples_per_class=10, seed=0).sample(32)
    assert b.inputs.shape == (32, 50, 4 + 5) and b.labels.shape == b.instance.shape == (32, 50)
    x, prev = b.inputs[..., :4], b.inputs[..., 4:]
    assert not prev[:, 0].any()
    assert torch.equal(prev[:, 1:], F.one_hot(b.labels[:, :-1], 5).float())
    idx = index_of(x.view(32, 50, 1, 2, 2))
    assert torch.equal(ds.labels[idx], b.classes.gather(1, b.labels))
    assert all(row.unique().numel() == 50 for row in idx)  # distinct examples
    assert torch.equal(F.one_hot(b.labels, 5).sum(1), torch.full((32, 5), 10))
    # instance = how many earlier steps had the same label.
    for t in range(3):
        seen = [0] * 5
        for s, y in enumerate(b.labels[t].tolist()):
            assert b.instance[t, s] == seen[y]
            seen[y] += 1
    # Order and label assignment are shuffled per episode.
    assert b.labels[:, 0].unique().numel() == 5 and b.classes[:, 0].unique().numel() > 1


def test_paper_setup_on_omniglot(omniglot_dir, omniglot_cache):
    train = load_omniglot("train", root=omniglot_dir, cache_dir=omniglot_cache, image_size=20, rotations=True)
    b = LabelOffsetSampler(train, n_way=5, examples_per_class=10, seed=0).sample(16)
    assert b.inputs.shape == (16, 50, 400 + 5)


def test_seed_and_bad_input():
    ds = indexed_dataset([4] * 6)
    assert torch.equal(LabelOffsetSampler(ds, 3, 4, seed=2).sample(3).inputs,
                       LabelOffsetSampler(ds, 3, 4, seed=2).sample(3).inputs)
    with pytest.raises(ValueError, match="n_way"):
        LabelOffsetSampler(ds, 7, 2)
    with pytest.raises(ValueError, match="examples_per_class"):
        LabelOffsetSampler(ds, 3, 5)
    with pytest.raises(ValueError, match="batch_size"):
        LabelOffsetSampler(ds, 3, 2).sample(0)
