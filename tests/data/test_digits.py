"""scikit-learn's bundled 8×8 digits."""
import torch

from metalearn_ext.data import EpisodeSampler, load_digits


def test_digits_shape_range_and_classes():
    ds = load_digits()
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == torch.float32
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert ds.class_names == tuple("0123456789")
    assert int(ds.class_counts().min()) >= 170
    batch = EpisodeSampler(ds, n_way=5, k_shot=5, n_query=10, seed=0).sample(2)
    assert batch.support_images.shape == (2, 25, 1, 8, 8)
