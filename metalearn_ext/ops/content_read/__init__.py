"""`content_read`: cosine content addressing of a memory and the weighted read (specs/memory_np.md §1)."""
from __future__ import annotations


import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops.choice import choose_backend, cpp_fast_path_open
from metalearn_ext.ops.content_read.reference import (
    COS_EPS,
    content_read_reference,
    cosine_similarity,
)
from metalearn_ext.ops.content_read.shapes import check_args, fake_content_read
from metalearn_ext.ops.registry import Kernel, OpSpec, Verdict

__all__ = ["COS_EPS", "SPEC", "check_args", "content_read", "content_read_reference", "cosine_similarity",
           "fits_shared_memory"]


def fits_shared_memory(S: int, H: int) -> Verdict:
    """Whether the CUDA kernels of content_read and mann_memory_step take S slots and H heads: they keep
    per-slot norms and the slot choice in 48 KiB of shared memory (csrc/cuda/content_read_kernels.cuh,
    memory_smem_bytes)."""
    return 4 * (3 * S + 3 * H + 512) <= 48 * 1024, f"supports 3·(S + H) + 512 <= 12288, got S={S}, H={H}"


def _fits_shared_memory(memory: Tensor, keys: Tensor, *rest) -> Verdict:
    return fits_shared_memory(memory.shape[1], keys.shape[1])


SPEC = registry.register(OpSpec(
    name="content_read",
    reference=content_read_reference,
    fake=fake_content_read,
    kernels={
        "cpp": Kernel(dtypes=(torch.float32, torch.float64)),
        "cuda": Kernel(dtypes=(torch.float32,), supports=_fits_shared_memory),
        "triton": Kernel(dtypes=(torch.float32,)),
    },
    cpp_autograd=True,  # csrc/memory_autograd.cpp
))


def _straight_to_cpp(memory, keys, beta, backend: str | None) -> bool:
    """Whether a call is for the C++ kernel with nothing for Python to decide: the fast path of MANN's step,
    where check_args and choose_backend cost as much as the kernel. The C++ op checks the arguments with
    check_args' messages (csrc/content_read.cpp), so bad input still gets them; what it cannot see (a
    non-tensor, a tensor on another device, which would dispatch elsewhere) goes the long way."""
    return (isinstance(memory, Tensor) and isinstance(keys, Tensor) and memory.is_cpu  # is_cpu: no device object
            and keys.is_cpu and memory.dtype in SPEC.kernels["cpp"].dtypes
            and (beta is None or (isinstance(beta, Tensor) and beta.is_cpu))
            and cpp_fast_path_open("content_read", backend))


def content_read(memory: Tensor, keys: Tensor, beta: Tensor | None = None,
                 backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Reads a memory by content.

    Args:
        memory: (B, S, W) S slots of width W per batch element.
        keys: (B, H, W) one key per read head.
        beta: (B, H) key strengths, or None for 1.
        backend: "reference", "cpp", "cuda", "triton", or None for the fastest usable one.

    Returns:
        weights (B, H, S) = softmax over S of beta·cos(keys[h], memory[s]), where a zero row or key has
        cosine 0 (never NaN); reads (B, H, W) = weights · memory. Differentiable w.r.t. every tensor input.
    """
    if _straight_to_cpp(memory, keys, beta, backend):
        return tuple(torch.ops.metalearn_ext.content_read(memory, keys, beta))
    check_args(memory, keys, beta)
    name = choose_backend("content_read", backend, memory, keys, beta)
    if name == "reference":
        return content_read_reference(memory, keys, beta)
    if name == "triton":
        from metalearn_ext.ops.content_read.triton import content_read_triton

        return content_read_triton(memory, keys, beta)
    return tuple(torch.ops.metalearn_ext.content_read(memory, keys, beta))  # cpp or cuda: by device
