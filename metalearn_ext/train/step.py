"""What one meta-step reports, and the seeded meta-batch both meta-optimizers draw."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from metalearn_ext.methods.base import Batch

__all__ = ["StepResult", "draw_batch"]


@dataclass
class StepResult:
    """One meta-step: the mean meta-loss over every process's items (nan if non-finite), whether
    the update was applied, and the method's work figures for throughput (``{"synapse_ticks": n}``)."""

    meta_loss: float
    applied: bool
    work: dict[str, float] = field(default_factory=dict)


def draw_batch(task, indices: Sequence[int], *, seed: int, step: int, meta_batch: int) -> Batch:
    """Items ``indices`` of meta-step ``step``, each from its own seed (the same in whichever process)."""
    return Batch(task.sample(indices, seed=seed, step=step, split="train"), indices, seed, step, meta_batch)
