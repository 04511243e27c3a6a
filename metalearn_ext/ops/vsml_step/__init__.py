"""`vsml_step`: one step of a dense VSML layer (specs/vsml.md §1), on any backend."""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from metalearn_ext import _backends
from metalearn_ext.ops.vsml_step.reference import vsml_step_reference

__all__ = ["check_args", "select_backend", "vsml_step", "vsml_step_reference"]

FUSED_N = (8, 16, 32)  # state sizes every fused kernel supports


def _shape(*dims) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def check_args(h, c, fwd_in, bwd_in, weight, bias, ticks) -> None:
    """Raises ValueError naming the argument and the expected shape, like the C++ checks."""
    op = "vsml_step"
    for name, t in (("h", h), ("c", c), ("fwd_in", fwd_in), ("bwd_in", bwd_in), ("weight", weight), ("bias", bias)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 1:
        raise ValueError(f"{op}: ticks must be an int >= 1, got {ticks!r}")
    if h.dim() != 4:
        raise ValueError(f"{op}: h must be of shape (T, A, B, N), got {_shape(*h.shape)}")
    if h.numel() == 0:
        raise ValueError(f"{op}: h must be non-empty (every size >= 1), got {_shape(*h.shape)}")
    if not h.is_floating_point():
        raise ValueError(f"{op}: h must be a floating-point tensor, got {h.dtype}")
    T, A, B, N = h.shape
    if c.shape != h.shape:
        raise ValueError(f"{op}: c must be of shape (T, A, B, N) = {_shape(*h.shape)} like h, got {_shape(*c.shape)}")
    if fwd_in.dim() != 3 or fwd_in.shape[:2] != (T, A) or fwd_in.shape[2] < 1:
        raise ValueError(f"{op}: fwd_in must be of shape (T, A, M) = {_shape(T, A, 'M')} with M >= 1, "
                         f"got {_shape(*fwd_in.shape)}")
    M = fwd_in.shape[2]
    if bwd_in.shape != (T, B, M):
        raise ValueError(f"{op}: bwd_in must be of shape (T, B, M) = {_shape(T, B, M)} (M from fwd_in), "
                         f"got {_shape(*bwd_in.shape)}")
    w_ok = weight.shape == (4 * N, 2 * M + N) or weight.shape == (T, 4 * N, 2 * M + N)
    if not w_ok:
        raise ValueError(f"{op}: weight must be of shape (4N, 2M+N) = {_shape(4 * N, 2 * M + N)} or "
                         f"(T, 4N, 2M+N) = {_shape(T, 4 * N, 2 * M + N)}, got {_shape(*weight.shape)}")
    if bias.shape != (4 * N,) and bias.shape != (T, 4 * N):
        raise ValueError(f"{op}: bias must be of shape (4N,) = {_shape(4 * N)} or (T, 4N) = {_shape(T, 4 * N)}, "
                         f"got {_shape(*bias.shape)}")
    for name, t in (("c", c), ("fwd_in", fwd_in), ("bwd_in", bwd_in), ("weight", weight), ("bias", bias)):
        if t.dtype != h.dtype:
            raise ValueError(f"{op}: {name} must be of dtype {h.dtype} like h, got {t.dtype}")
        if t.device != h.device:
            raise ValueError(f"{op}: {name} must be on device {h.device} like h, got {t.device}")


def _unsupported(name: str, h: Tensor) -> str | None:
    """Why a built backend cannot take these tensors, or None."""
    N = h.shape[-1]
    if name == "cpp":
        if h.device.type != "cpu":
            return f"the cpp backend runs on CPU tensors, got {h.device}"
        if h.dtype not in (torch.float32, torch.float64):
            return f"the cpp backend takes float32 or float64, got {h.dtype}"
    if name in ("cuda", "triton"):
        if name == "cuda" and h.device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors, got {h.device}"
        if h.dtype != torch.float32:
            return f"the {name} backend takes float32, got {h.dtype}"
        if N not in FUSED_N:
            return f"the {name} backend supports N in {FUSED_N}, got N={N}"
    return None


def select_backend(backend: str | None, h: Tensor) -> str:
    """The backend that will run: the forced one (raising if unusable) or the best built one."""
    backend = backend or os.environ.get("METALEARN_BACKEND") or None
    if backend is not None:
        if backend not in _backends.BACKENDS:
            raise ValueError(f"vsml_step: backend must be one of {_backends.BACKENDS} or None, got {backend!r}")
        if not _backends.available(backend):
            raise RuntimeError(f"vsml_step: backend {backend!r} is not available: {_backends.status(backend).reason}")
        why = _unsupported(backend, h)
        if why is None:
            return backend
        if backend in ("cuda", "triton") and why.startswith(f"the {backend} backend supports N"):
            fallback = "cpp" if h.device.type == "cpu" and _backends.available("cpp") else "reference"
            warnings.warn(f"vsml_step: {why}; falling back to {fallback}", stacklevel=3)
            return fallback
        raise RuntimeError(f"vsml_step: backend {backend!r} cannot run here: {why}")
    order = ("cuda", "triton") if h.device.type == "cuda" else ("cpp",)
    for name in order:
        if _backends.available(name) and _unsupported(name, h) is None:
            return name
    return "reference"


def vsml_step(
    h: Tensor,
    c: Tensor,
    fwd_in: Tensor,
    bwd_in: Tensor,
    weight: Tensor,
    bias: Tensor,
    ticks: int = 1,
    backend: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step (``ticks`` LSTM ticks) of a dense VSML layer whose synapses are shared-parameter LSTMs.

    Args:
        h, c: (T, A, B, N) hidden and cell state of every synapse of T independent copies.
        fwd_in: (T, A, M) forward message arriving at each input neuron a.
        bwd_in: (T, B, M) backward message arriving at each output neuron b.
        weight: (4N, 2M+N) shared, or (T, 4N, 2M+N) per copy; columns [fwd | bwd | h], gates i, f, g, o.
        bias: (4N,) shared, or (T, 4N) per copy.
        ticks: LSTM ticks per step; the messages stay fixed across them.
        backend: "reference", "cpp", "cuda", "triton", or None for the fastest usable one
            (``$METALEARN_BACKEND`` overrides the default).

    Returns:
        (h', c', fwd_mean, bwd_mean): h', c' (T, A, B, N); fwd_mean (T, B, N) = mean over a of h';
        bwd_mean (T, A, N) = mean over b of h'. Inputs are never modified; differentiable w.r.t.
        all six tensors on every backend.
    """
    check_args(h, c, fwd_in, bwd_in, weight, bias, ticks)
    name = select_backend(backend, h)
    if name == "reference":
        return vsml_step_reference(h, c, fwd_in, bwd_in, weight, bias, ticks)
    if name == "triton":
        from metalearn_ext.ops.vsml_step.triton import vsml_step_triton

        return vsml_step_triton(h, c, fwd_in, bwd_in, weight, bias, ticks)
    from metalearn_ext.ops.vsml_step.cpp import vsml_step_cpp

    return vsml_step_cpp(h, c, fwd_in, bwd_in, weight, bias, ticks)
