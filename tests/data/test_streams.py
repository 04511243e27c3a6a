"""Online streams for VSML/BLUR: (T, L, D) inputs, per-stream class subsets and label
permutations, fixed per-stream projections, resizing."""
import pytest
import torch

from metalearn_ext.data import StreamSampler, load_digits, load_mnist

from .helpers import index_of, indexed_dataset


def test_shapes_class_subsets_and_label_permutations():
    ds = indexed_dataset([30] * 10)
    s = StreamSampler(ds, num_classes=3, seed=0).sample(num_streams=200, length=40)
    assert s.inputs.shape == (200, 40, 4) and s.labels.shape == (200, 40) and s.classes.shape == (200, 3)
    assert s.projection is None and s.inputs.dtype == torch.float32
    assert int(s.labels.min()) == 0 and int(s.labels.max()) == 2
    assert all(row.unique().numel() == 3 for row in s.classes)
    # Each input is an example of the class its label stands for in that stream.
    idx = index_of(s.inputs.view(200, 40, 1, 2, 2))
    assert torch.equal(ds.labels[idx], s.classes.gather(1, s.labels))
    # The same dataset class gets different labels in different streams.
    label_of_class = {}
    for t in range(200):
        for j, c in enumerate(s.classes[t].tolist()):
            label_of_class.setdefault(c, set()).add(j)
    assert all(len(v) == 3 for v in label_of_class.values())
    assert s.classes.unique().numel() == 10


def test_default_uses_all_classes_and_seed_reproduces():
    ds = indexed_dataset([5] * 4)
    a = StreamSampler(ds, seed=3).sample(4, 9)
    b = StreamSampler(ds, seed=3).sample(4, 9)
    assert a.classes.shape == (4, 4) and torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(StreamSampler(ds, seed=4).sample(4, 9).labels, a.labels)


def test_projection_is_fixed_per_stream_and_differs_between_streams():
    ds = indexed_dataset([10] * 6, shape=(1, 3, 3))
    raw = StreamSampler(ds, num_classes=4, seed=5).sample(6, 20)
    proj = StreamSampler(ds, num_classes=4, projection_dim=7, seed=5).sample(6, 20)
    assert proj.inputs.shape == (6, 20, 7) and proj.projection.shape == (6, 9, 7)
    torch.testing.assert_close(proj.inputs, torch.bmm(raw.inputs, proj.projection))
    assert not torch.allclose(proj.projection[0], proj.projection[1])
    assert abs(float(proj.projection.std()) - 9 ** -0.5) < 0.1


def test_resizing_lets_one_learner_meet_different_resolutions():
    digits = StreamSampler(load_digits(), num_classes=5, image_size=14, seed=0)
    assert digits.input_dim == 196 and digits.sample(2, 8).inputs.shape == (2, 8, 196)
    try:
        fashion = load_mnist("test", name="fashion-mnist")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    stream = StreamSampler(fashion, num_classes=5, image_size=14, projection_dim=32, seed=0).sample(3, 50)
    assert stream.inputs.shape == (3, 50, 32) and torch.isfinite(stream.inputs).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=11), "num_classes"), (dict(num_classes=0), "num_classes"),
    (dict(projection_dim=0), "projection_dim"), (dict(image_size=0), "image_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StreamSampler(indexed_dataset([3] * 10), **kwargs)


def test_bad_sample_sizes():
    s = StreamSampler(indexed_dataset([3] * 3))
    with pytest.raises(ValueError, match="num_streams"):
        s.sample(0, 5)
    with pytest.raises(ValueError, match="length"):
        s.sample(2, 0)
