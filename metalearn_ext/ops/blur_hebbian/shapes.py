"""blur_hebbian's argument checks and fake (shape-only) implementation."""
from __future__ import annotations

from torch import Tensor

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str
from metalearn_ext.ops.blur_propagate.shapes import check_mix

OP = "blur_hebbian"


def check_weight(weight: Tensor) -> None:
    if weight.dim() != 4 or weight.numel() == 0:
        raise ValueError(f"{OP}: weight must be a non-empty tensor of shape (T, I, J, k), got {shape_str(*weight.shape)}")


def check_args(weight, pre, post, pre_mix, post_mix, decay: Tensor, lr: Tensor, normalize, oja) -> None:
    """decay and lr arrive as (T,) tensors (the public function converts floats and checks finiteness)."""
    require_tensors(OP, weight=weight, pre=pre, post=post, pre_mix=pre_mix, post_mix=post_mix)
    for name, flag in (("normalize", normalize), ("oja", oja)):
        if not isinstance(flag, bool):
            raise TypeError(f"{OP}: {name} must be a bool, got {type(flag).__name__}")
    check_weight(weight)
    T, I, J, k = weight.shape
    if pre.dim() != 4 or pre.shape[0] != T or pre.shape[2:] != (I, k) or pre.shape[1] < 1:
        raise ValueError(f"{OP}: pre must be of shape (T, batch, I, k) = {shape_str(T, 'batch', I, k)} "
                         f"(T, I, k from weight), got {shape_str(*pre.shape)}")
    B = pre.shape[1]
    if post.shape != (T, B, J, k):
        raise ValueError(f"{OP}: post must be of shape (T, batch, J, k) = {shape_str(T, B, J, k)} "
                         f"(batch from pre, T, J, k from weight), got {shape_str(*post.shape)}")
    check_mix(OP, "pre_mix", pre_mix, T, k)
    check_mix(OP, "post_mix", post_mix, T, k)
    require_like(OP, "weight", weight, (("pre", pre), ("post", post), ("pre_mix", pre_mix),
                                        ("post_mix", post_mix), ("decay", decay), ("lr", lr)))


def fake_blur_hebbian(weight, pre, post, pre_mix, post_mix, decay, lr, normalize, oja):
    return weight.new_empty(weight.shape)
