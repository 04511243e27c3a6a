"""`mann_episode`: MANN's whole recurrence over an episode — LSTM cell, heads and LRUA memory step, every step —
as one C++ call, and its backward through time as one more (specs/memory_np.md §1)."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.mann_episode.reference import mann_episode_loop, mann_episode_reference
from metalearn_ext.ops.mann_episode.shapes import check_args, fake_mann_episode
from metalearn_ext.ops.registry import Kernel, OpSpec

__all__ = ["SPEC", "check_args", "mann_episode", "mann_episode_loop", "mann_episode_reference"]

SPEC = registry.register(OpSpec(
    name="mann_episode",
    reference=mann_episode_reference,
    fake=fake_mann_episode,
    # CPU only: on a GPU the per-step loop's kernels (mann_memory_step's cuda / triton) are what MANN runs; the
    # episode's forward there is meant for CUDA-graph capture instead.
    kernels={"cpp": Kernel(dtypes=(torch.float32, torch.float64))},
    cpp_autograd=True,  # csrc/cpu/mann_episode.cpp: one node per episode, keeping the forward's buffers
))


def mann_episode(x_gates: Tensor, w_rec: Tensor, w_head: Tensor, b_head: Tensor, heads: int, slots: int,
                 gamma: float = 0.95, memory_init: float = 1e-6,
                 backend: str | None = None) -> tuple[Tensor, Tensor]:
    """MANN's controller and memory over B episodes of L steps (nn.MANN's recurrence), fused.

    Args:
        x_gates: (B, L, 4n) the part of the LSTM gates [i, f, o, g] that does not depend on the recurrence (the
            projection of [x_s ; onehot(y_{s−1})], bias included).
        w_rec: (4n, H·W + n) the gates' weights on [r_{s−1} ; h_{s−1}] (no bias).
        w_head: (2·H·W + H, n), b_head (2·H·W + H): keys (tanh), add vectors (tanh) and write gates (sigmoid) of
            the H heads from h_s.
        heads: H; slots: S, the memory's rows (their width W = (w_rec's columns − n) / H).
        gamma: usage decay; memory_init: every memory entry at s = 0.
        backend: "reference", "cpp", or None for the fastest usable one.

    Returns:
        (h (B, L, n), reads (B, L, H·W)): the controller's outputs and the memory's reads r_s at every step.
        Differentiable w.r.t. the four tensors (the cpp backend: one autograd node per call, which keeps the
        forward's buffers, the memory after every step included: (L+1)·B·S·W values). The cpp backend keeps the
        last call's buffers per thread and reuses them once nothing holds them any more (fresh ones would be
        faulted in anew every call).
    """
    args = (x_gates, w_rec, w_head, b_head, heads, slots, gamma, memory_init)
    check_args(*args)
    if choose_backend("mann_episode", backend, *args) == "reference":
        return mann_episode_reference(*args)
    return tuple(torch.ops.metalearn_ext.mann_episode(x_gates, w_rec, w_head, b_head, heads, slots, float(gamma),
                                                      float(memory_init)))
