"""`mann_memory_step`: one whole LRUA memory step of MANN — zero, write, read, usage (specs/memory_np.md §1)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops.choice import choose_backend, cpp_fast_path_open
from metalearn_ext.ops.content_read import fits_shared_memory
from metalearn_ext.ops.mann_memory_step.reference import (
    least_used,
    mann_memory_step_reference,
)
from metalearn_ext.ops.mann_memory_step.shapes import check_args, fake_mann_memory_step
from metalearn_ext.ops.registry import Kernel, OpSpec, Verdict

__all__ = ["SPEC", "check_args", "least_used", "mann_memory_step", "mann_memory_step_reference"]


def _fits_shared_memory(memory: Tensor, usage: Tensor, read_weights: Tensor, keys: Tensor, *rest) -> Verdict:
    return fits_shared_memory(memory.shape[1], keys.shape[1])


SPEC = registry.register(OpSpec(
    name="mann_memory_step",
    reference=mann_memory_step_reference,
    fake=fake_mann_memory_step,
    kernels={
        "cpp": Kernel(dtypes=(torch.float32, torch.float64)),
        "cuda": Kernel(dtypes=(torch.float32,), supports=_fits_shared_memory),
        "triton": Kernel(dtypes=(torch.float32,)),
    },
    cpp_autograd=True,  # csrc/memory_autograd.cpp
))


def _straight_to_cpp(tensors: tuple, gamma, backend: str | None) -> bool:
    """Whether a call is for the C++ kernel with nothing for Python to decide (as content_read's): check_args
    and choose_backend cost ~10% of the step's forward at MANN's sizes. The C++ op checks the arguments with
    check_args' messages (csrc/mann_memory_step.cpp); what it cannot see (a non-tensor, a tensor on another
    device, a gamma that is not a float) goes the long way."""
    return (all(isinstance(t, Tensor) and t.is_cpu for t in tensors)
            and tensors[0].dtype in SPEC.kernels["cpp"].dtypes
            and type(gamma) is float and math.isfinite(gamma)
            and cpp_fast_path_open("mann_memory_step", backend))


def mann_memory_step(memory: Tensor, usage: Tensor, read_weights: Tensor, keys: Tensor, add: Tensor,
                     alpha: Tensor, gamma: float = 0.95,
                     backend: str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One step of Least Recently Used Access: zero the least-used slot, write, read by content, update usage.

    Args:
        memory: (B, S, W) memory after the last step.
        usage: (B, S) usage weights after the last step.
        read_weights: (B, H, S) read weights of the last step.
        keys: (B, H, W) read keys of this step; add: (B, H, W) what each head writes.
        alpha: (B, H) write gates in [0, 1] (a sigmoid's output).
        gamma: usage decay.
        backend: "reference", "cpp", "cuda", "triton", or None for the fastest usable one.

    Returns:
        (memory' (B, S, W), read_weights' (B, H, S), reads (B, H, W), usage' (B, S), write_weights (B, H, S)):
        head h writes into the h-th least-used slot of `usage` (interpolated by alpha with its last read
        weights); the single least-used slot is zeroed first. Differentiable w.r.t. memory, usage,
        read_weights, keys, add and alpha (not through the choice of slots).
    """
    if _straight_to_cpp((memory, usage, read_weights, keys, add, alpha), gamma, backend):
        return tuple(torch.ops.metalearn_ext.mann_memory_step(memory, usage, read_weights, keys, add, alpha, gamma))
    args = (memory, usage, read_weights, keys, add, alpha, gamma)
    check_args(*args)
    name = choose_backend("mann_memory_step", backend, *args)
    if name == "reference":
        return mann_memory_step_reference(*args)
    if name == "triton":
        from metalearn_ext.ops.mann_memory_step.triton import mann_memory_step_triton

        return mann_memory_step_triton(*args)
    return tuple(torch.ops.metalearn_ext.mann_memory_step(memory, usage, read_weights, keys, add, alpha,
                                                          float(gamma)))  # cpp or cuda: by device
