"""What the held-out protocols share: their count checks and the loop over held-out items.

Items are indices 0 … count−1 of step 0 under a seed derived from ``(seed, EVAL)``, so they never
coincide with a training draw (whose seed is the run seed itself), and the same items come out
whatever ``batch_size`` is: models evaluated with the same seed see the same tasks.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from metalearn_ext.tasks.seeds import EVAL, derive_seed

__all__ = ["check_counts", "held_out_batches"]


def check_counts(who: str, **counts: Any) -> None:
    """ValueError naming the first of ``counts`` that is not a positive int."""
    for name, v in counts.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")


def held_out_batches(task: Any, count: int, *, seed: int, batch_size: int, split: str,
                     device: torch.device | str | None, progress: bool, desc: str, unit: str,
                     **sample_kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """(batch as drawn, the same on ``device``) for items 0 … count−1, ``batch_size`` at a time,
    with a progress bar counting items."""
    eval_seed = derive_seed(seed, EVAL)
    with tqdm(total=count, desc=desc, unit=unit, disable=not progress) as bar:
        for start in range(0, count, batch_size):
            indices = range(start, min(start + batch_size, count))
            batch = task.sample(indices, seed=eval_seed, step=0, split=split, **sample_kwargs)
            yield batch, (batch.to(device) if device is not None else batch)
            bar.update(len(indices))
