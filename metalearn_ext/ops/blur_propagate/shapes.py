"""blur_propagate's argument checks and fake (shape-only) implementation."""
from __future__ import annotations

from torch import Tensor

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str

OP = "blur_propagate"


def check_mix(op: str, name: str, mix: Tensor, T: int, k: int) -> None:
    if mix.shape != (k, k) and mix.shape != (T, k, k):
        raise ValueError(f"{op}: {name} must be of shape (k, k) = {shape_str(k, k)} or (T, k, k) = "
                         f"{shape_str(T, k, k)} (k states, T copies from weight), got {shape_str(*mix.shape)}")


def check_args(a, weight, mix, transpose) -> None:
    require_tensors(OP, a=a, weight=weight, mix=mix)
    if not isinstance(transpose, bool):
        raise TypeError(f"{OP}: transpose must be a bool, got {type(transpose).__name__}")
    if weight.dim() != 4 or weight.numel() == 0:
        raise ValueError(f"{OP}: weight must be a non-empty tensor of shape (T, I, J, k), got {shape_str(*weight.shape)}")
    T, I, J, k = weight.shape
    n, side = (J, "J") if transpose else (I, "I")
    if a.dim() != 4 or a.shape[0] != T or a.shape[2] != n or a.shape[3] != k or a.shape[1] < 1:
        raise ValueError(f"{OP}: a must be of shape (T, batch, {side}, k) = {shape_str(T, 'batch', n, k)} "
                         f"(transpose={transpose}, T, {side}, k from weight), got {shape_str(*a.shape)}")
    check_mix(OP, "mix", mix, T, k)
    require_like(OP, "a", a, (("weight", weight), ("mix", mix)))


def fake_blur_propagate(a, weight, mix, transpose):
    T, I, J, k = weight.shape
    return a.new_empty((T, a.shape[1], I if transpose else J, k))
