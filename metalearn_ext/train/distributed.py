"""torch.distributed helpers: every call is a no-op in a single process.

Started with ``torchrun`` (RANK / WORLD_SIZE / MASTER_ADDR set), meta-training joins a process
group: gloo on CPU, nccl on GPU. Ranks split the ES population or the BPTT meta-batch and
exchange only fitness values or gradients.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum", "barrier", "init_from_env", "rank_and_world", "shard", "threads_per_process"]


def init_from_env(device: torch.device) -> bool:
    """Join the process group described by torchrun's environment; False when not under torchrun."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def threads_per_process(requested: int | None) -> int | None:
    """Intra-op threads for this process: ``requested`` (None: torch's default), but at most its share
    of the machine's cores when torchrun started several processes on this machine
    (``LOCAL_WORLD_SIZE``), so that they do not oversubscribe the cores between them."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local <= 1:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cores // local)
    return share if requested is None else min(requested, share)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, rank: int, world: int) -> range:
    """The contiguous part of range(n) that ``rank`` of ``world`` handles (sizes differ by at most 1)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return range(lo, lo + base + (1 if rank < extra else 0))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks, in place; returns it."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
