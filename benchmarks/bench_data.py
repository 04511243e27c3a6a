"""Episode sampling throughput: Omniglot 5-way 1-shot, 15 queries, 28×28, from cache, one core.

Issue target: ≥ 2,000 episodes/s. The archives are read from ``<repo>/../shared/data/omniglot``
if present, else from the usual search path (``$METALEARN_DATA``, ``~/.cache/metalearn``); decoded
images are cached in the default cache directory, so only the first run decodes PNGs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.timing import median_seconds
from metalearn_ext.data import EpisodeBatch, EpisodeSampler, load_omniglot

N_WAY, K_SHOT, N_QUERY, IMAGE_SIZE = 5, 1, 15, 28
BATCHES = (1, 32)  # episodes per sample() call
SHARED_OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


def _check(batch: EpisodeBatch, sampler: EpisodeSampler, episodes: int) -> str | None:
    """None if the batch has the right shapes and labels, distinct classes per episode, and
    every image is one of its labelled class's images."""
    shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    if batch.support_images.shape != (episodes, N_WAY * K_SHOT, *shape):
        return f"support shape {tuple(batch.support_images.shape)}"
    if batch.query_images.shape != (episodes, N_WAY * N_QUERY, *shape):
        return f"query shape {tuple(batch.query_images.shape)}"
    if (batch.classes.sort(1).values.diff(dim=1) == 0).any():
        return "a class repeated within an episode"
    table = sampler.index.table  # (classes, max_count); Omniglot classes are all full
    flat = sampler.images.flatten(1)
    for part, images, labels, per_class in (("support", batch.support_images, batch.support_labels, K_SHOT),
                                            ("query", batch.query_images, batch.query_labels, N_QUERY)):
        if not torch.equal(labels, torch.arange(N_WAY).repeat_interleave(per_class).expand(episodes, -1)):
            return f"{part} labels are not 0..{N_WAY - 1} class-major"
        pool = flat[table[batch.classes.gather(1, labels)]]  # (E, entries, max_count, D)
        found = (pool == images.flatten(2).unsqueeze(2)).all(-1).any(-1)
        if not found.all():
            return f"a {part} image is not an image of its labelled class"
    return None


def omniglot_episodes(device: str) -> list[dict]:
    """Rows: name, median_s (per sample() call), throughput (episodes/s), unit, ok[, note]."""
    rows: list[dict] = []
    root = SHARED_OMNIGLOT if SHARED_OMNIGLOT.is_dir() else None
    try:
        dataset = load_omniglot("train", root=root, image_size=IMAGE_SIZE, rotations=True)
    except FileNotFoundError as e:
        return [dict(name="omniglot_episodes", median_s=None, throughput=None, unit="episodes/s",
                     ok=False, note=f"skipped: Omniglot archives not found ({e.args[0].splitlines()[0]})")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for episodes in BATCHES:
            sampler = EpisodeSampler(dataset, N_WAY, K_SHOT, N_QUERY, seed=0)
            name = f"omniglot_{N_WAY}w{K_SHOT}s{N_QUERY}q_{IMAGE_SIZE}px_x{episodes}"
            problem = _check(sampler.sample(episodes), sampler, episodes)
            if problem:
                rows.append(dict(name=name, median_s=None, throughput=None, unit="episodes/s", ok=False,
                                 note=f"wrong episodes: {problem}"))
                continue

            def call(sampler=sampler, episodes=episodes):
                batch = sampler.sample(episodes)
                if device != "cpu":
                    batch.to(device, non_blocking=True)

            t = median_seconds(call, device if device == "cuda" else "cpu")
            rows.append(dict(name=name, median_s=t, throughput=episodes / t, unit="episodes/s", ok=True,
                             classes=dataset.num_classes, threads=1))
    finally:
        torch.set_num_threads(threads)
    return rows


BENCHES = {"omniglot_episodes": omniglot_episodes}
