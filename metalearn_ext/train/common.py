"""What both meta-trainers share: per-seed episodes and the result of one meta-step."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from metalearn_ext.nn import VSML, VSMLState
from metalearn_ext.train.tasks import STATE, STREAM, TaskSource, derive_seed, generator

__all__ = ["StepResult", "episodes"]


@dataclass
class StepResult:
    """One meta-step: mean online loss over every rank's episodes (nan if non-finite),
    whether the update was applied, synapse-ticks computed over all ranks."""

    meta_loss: float
    applied: bool
    synapse_ticks: int


def episodes(model: VSML, tasks: TaskSource, seed: int, step: int, indices: Sequence[int], length: int
             ) -> tuple[Tensor, Tensor, VSMLState]:
    """Episode ``i`` of meta-step ``step`` for each i in ``indices``: inputs (T, L, D), labels (T, L) and a
    fresh initial state, each drawn from its own seed — identical whichever process draws it."""
    x, y = tasks.streams([derive_seed(seed, step, i, STREAM) for i in indices], length)
    state = VSMLState.cat([model.initial_state(1, generator(seed, step, i, STATE)) for i in indices])
    return x, y, state
