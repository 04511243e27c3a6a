"""Data sets on disk (never downloaded unasked), episode samplers and online task streams.

Image data sets come back as :class:`ImageDataset` (images (num, C, H, W) float32 in [0, 1],
labels (num,) int64, class names); samplers turn them into stacked, seeded batches.
"""

from .class_index import ClassIndex
from .dataset import ImageDataset, split_classes
from .digits import load_digits
from .download import (
    DATASETS,
    DownloadError,
    RemoteFile,
    download_dataset,
    download_files,
)
from .episodes import EpisodeBatch, EpisodeSampler
from .gp_kernels import KERNELS, gp_kernel, se_kernel
from .idx import load_mnist, parse_idx, read_idx
from .label_offset import LabelOffsetBatch, LabelOffsetSampler
from .omniglot import find_omniglot_sources, load_omniglot, load_omniglot_image, omniglot_character_split
from .paths import default_data_dir, search_dirs
from .streams import StreamBatch, StreamSampler
from .synthetic import (
    GPBatch,
    SinusoidBatch,
    gp_oracle_log_prob,
    gp_posterior_predictive,
    sample_gp_curves,
    sample_sinusoid_tasks,
)

__all__ = [
    "DATASETS",
    "ClassIndex",
    "DownloadError",
    "EpisodeBatch",
    "EpisodeSampler",
    "GPBatch",
    "ImageDataset",
    "KERNELS",
    "LabelOffsetBatch",
    "LabelOffsetSampler",
    "RemoteFile",
    "SinusoidBatch",
    "StreamBatch",
    "StreamSampler",
    "default_data_dir",
    "download_dataset",
    "download_files",
    "find_omniglot_sources",
    "gp_kernel",
    "gp_oracle_log_prob",
    "gp_posterior_predictive",
    "load_digits",
    "load_mnist",
    "load_omniglot",
    "load_omniglot_image",
    "omniglot_character_split",
    "parse_idx",
    "read_idx",
    "sample_gp_curves",
    "sample_sinusoid_tasks",
    "se_kernel",
    "search_dirs",
    "split_classes",
]
