"""ImageDataset validation, class subsets and disjoint class splits."""
import pytest
import torch

from metalearn_ext.data import ImageDataset, split_classes

from .helpers import indexed_dataset


def test_validates_shapes_dtypes_and_labels():
    x, y = torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1])
    assert len(ImageDataset(x, y, ("a", "b"))) == 3
    with pytest.raises(ValueError, match="images"):
        ImageDataset(torch.zeros(3, 2, 2), y, ("a", "b"))
    with pytest.raises(ValueError, match="images"):
        ImageDataset(x.double(), y, ("a", "b"))
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(x, y.int(), ("a", "b"))
    with pytest.raises(ValueError, match="labels has 2"):
        ImageDataset(x, y[:2], ("a", "b"))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        ImageDataset(x, y, ("a",))


def test_subset_classes_relabels_in_given_order():
    ds = indexed_dataset([3, 4, 5])
    sub = ds.subset_classes([2, 0])
    assert sub.class_names == ("class2", "class0")
    assert sub.class_counts().tolist() == [5, 3]
    original = ds.labels[(sub.images[:, 0, 0, 0] * 1000).round().long()]
    assert torch.equal(original, torch.tensor([2, 0])[sub.labels])
    with pytest.raises(ValueError, match="distinct"):
        ds.subset_classes([1, 1])
    with pytest.raises(ValueError, match="classes must lie"):
        ds.subset_classes([3])


def test_split_classes_disjoint_seeded_and_complete():
    ds = indexed_dataset([2] * 10)
    a, b, c = split_classes(ds, [5, 3, 2], seed=3)
    names = [set(s.class_names) for s in (a, b, c)]
    assert [len(n) for n in names] == [5, 3, 2]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set().union(*names) == set(ds.class_names)
    assert [s.class_names for s in split_classes(ds, [5, 3, 2], seed=3)] == [s.class_names for s in (a, b, c)]
    assert split_classes(ds, [5, 5], seed=4)[0].class_names != split_classes(ds, [5, 5], seed=5)[0].class_names


@pytest.mark.parametrize("sizes", [[5, 0], [], [8, 3]])
def test_split_classes_rejects_empty_or_oversized_splits(sizes):
    with pytest.raises(ValueError, match="sizes"):
        split_classes(indexed_dataset([2] * 10), sizes)


def test_resized_shapes_and_range():
    ds = ImageDataset(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64), ("a",))
    small = ds.resized(14)
    assert small.images.shape == (4, 1, 14, 14)
    assert 0 <= float(small.images.min()) and float(small.images.max()) <= 1
    assert ds.resized(28) is ds
    with pytest.raises(ValueError, match="size"):
        ds.resized(0)
