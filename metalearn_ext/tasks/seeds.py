"""Seeds derived from (run seed, step, index, purpose): every task of a meta-batch, every initial
state and every ES perturbation is drawn from its own seed, so the same item comes out whichever
process draws it, and nothing but the step count is needed to resume a run exactly."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["BASELINE_INIT", "EVAL", "NOISE", "PROJECT", "RNN_INIT", "STATE", "STREAM", "TEST", "TUNE", "VALID",
           "derive_seed", "generator"]

# purposes, so that streams, initial states, ES noise and the evaluations' draws never share a seed
STREAM, STATE, NOISE, EVAL = 1, 2, 3, 4
TEST, TUNE, PROJECT, BASELINE_INIT, RNN_INIT = 5, 6, 7, 8, 9
VALID = 10


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))
