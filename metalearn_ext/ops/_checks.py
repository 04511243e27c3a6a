"""Argument checks every op's Python side shares: messages name the argument and the expected shape."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def shape_str(*dims) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def require_tensors(op: str, **tensors) -> None:
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def require_like(op: str, ref_name: str, ref: Tensor, others: Iterable[tuple[str, Tensor]]) -> None:
    """Every other tensor has ref's dtype and device."""
    if not ref.is_floating_point():
        raise ValueError(f"{op}: {ref_name} must be a floating-point tensor, got {ref.dtype}")
    for name, t in others:
        if t.dtype != ref.dtype:
            raise ValueError(f"{op}: {name} must be of dtype {ref.dtype} like {ref_name}, got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} must be on device {ref.device} like {ref_name}, got {t.device}")


def per_copy_scalar(op: str, name: str, value, T: int, like: Tensor) -> Tensor:
    """A float, a 0-d tensor or a (T,) tensor as a (T,) tensor of like's dtype and device; its
    finiteness is checked by :func:`require_finite`, or by the C++/CUDA kernels themselves."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            value = value.expand(T)
        elif value.shape != (T,):
            raise ValueError(f"{op}: {name} must be a scalar or of shape (T,) = {shape_str(T)}, "
                             f"got {shape_str(*value.shape)}")
        if value.device != like.device:
            raise ValueError(f"{op}: {name} must be on device {like.device}, got {value.device}")
        value = value.to(like.dtype)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = torch.full((T,), float(value), dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"{op}: {name} must be a float or a tensor, got {type(value).__name__}")
    return value


def require_finite(op: str, **tensors: Tensor) -> None:
    """Every value finite (a host sync on a GPU: for the backends whose kernels do not check it)."""
    for name, t in tensors.items():
        if not torch.isfinite(t.detach()).all():
            raise ValueError(f"{op}: {name} must be finite, got {t.detach().tolist()}")
