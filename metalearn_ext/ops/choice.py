"""Which backend runs one call of an op: the forced one, or the fastest usable one for its tensors."""
from __future__ import annotations

import functools
import os
import warnings

import torch
from torch import Tensor

from metalearn_ext import _backends
from metalearn_ext.ops import registry
from metalearn_ext.ops.registry import OpSpec

FASTEST_FIRST = {"cuda": ("cuda", "triton"), "cpu": ("cpp",)}  # by tensor device; "reference" after all


@torch.compiler.assume_constant_result
@functools.cache
def _cpp_built(op: str) -> bool:
    return _backends.available("cpp", op)


def cpp_fast_path_open(op: str, requested: str | None) -> bool:
    """Whether a call of ``op`` that asks for ``requested`` may go straight to its C++ kernel, past
    ``check_args`` and :func:`choose_backend` (the memory ops' per-step fast path, where those cost as much as
    the kernel): the request is "cpp" or nothing (nor ``METALEARN_BACKEND``), the call is not being traced
    (Dynamo skips the cached availability check: traced calls take the checked path) and the cpp backend is
    built. The caller still checks that its arguments are plain CPU tensors of a dtype the kernel takes."""
    if requested != "cpp" and (requested or os.environ.get("METALEARN_BACKEND")):
        return False
    return not torch.compiler.is_compiling() and _cpp_built(op)


def _dtype_names(dtypes: tuple[torch.dtype, ...]) -> str:
    return " or ".join(str(d).removeprefix("torch.") for d in dtypes)


def _cannot_run(spec: OpSpec, name: str, device: torch.device, dtype: torch.dtype) -> str:
    """Why a usable backend cannot take tensors of this device and dtype at all, or ""."""
    why = _backends.runs_on(name, device.type)
    if not why and dtype not in spec.kernels[name].dtypes:
        why = f"the {name} backend takes {_dtype_names(spec.kernels[name].dtypes)}, got {dtype}"
    return why


def _fastest(spec: OpSpec, args: tuple, device: torch.device, dtype: torch.dtype, exclude: str = "") -> str:
    for name in FASTEST_FIRST.get(device.type, ()):
        if (name != exclude and name in spec.kernels and _backends.available(name, spec.name)
                and not _cannot_run(spec, name, device, dtype) and spec.kernels[name].supports(*args)[0]):
            return name
    return "reference"


def choose_backend(op: str, requested: str | None, *args) -> str:
    """The backend that runs `op(*args)`: one of "reference", "cpp", "cuda", "triton".

    `requested` None (or "", then ``$METALEARN_BACKEND`` if set) picks the fastest usable one for the
    device of the first tensor argument (CUDA: cuda, then triton; CPU: cpp; else the reference). A
    forced backend that is not usable here, or cannot take these tensors' device or dtype, raises
    RuntimeError with the reason; one whose kernel does not support these sizes falls back to the
    fastest other backend with a warning.
    """
    spec = registry.get(op)
    first = next(a for a in args if isinstance(a, Tensor))
    device, dtype = first.device, first.dtype
    requested = requested or os.environ.get("METALEARN_BACKEND") or None
    if requested is None:
        return _fastest(spec, args, device, dtype)
    if requested not in _backends.BACKENDS:
        raise ValueError(f"{op}: backend must be one of {_backends.BACKENDS} or None, got {requested!r}")
    if requested == "reference":
        return requested
    if not _backends.available(requested, op):
        raise RuntimeError(f"{op}: backend {requested!r} is not available: {_backends.status(requested, op).reason}")
    why = _cannot_run(spec, requested, device, dtype)
    if why:
        raise RuntimeError(f"{op}: backend {requested!r} cannot run here: {why}")
    ok, why = spec.kernels[requested].supports(*args)
    if ok:
        return requested
    fallback = _fastest(spec, args, device, dtype, exclude=requested)
    warnings.warn(f"{op}: the {requested} backend {why}; falling back to {fallback}", stacklevel=3)
    return fallback
