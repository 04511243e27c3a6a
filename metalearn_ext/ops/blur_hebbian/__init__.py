"""`blur_hebbian`: BLUR's synapse update from pre- and post-synaptic states (specs/blur.md §2–3)."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops._checks import per_copy_scalar, require_finite, require_tensors
from metalearn_ext.ops.blur_hebbian.reference import NORM_EPS, blur_hebbian_reference
from metalearn_ext.ops.blur_hebbian.shapes import check_args, check_weight, fake_blur_hebbian
from metalearn_ext.ops.blur_propagate import states_at_most_max
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.registry import Kernel, OpSpec, Verdict

__all__ = ["NORM_EPS", "SPEC", "blur_hebbian", "blur_hebbian_reference", "check_args"]


def _states_at_most_max(weight: Tensor, *args) -> Verdict:
    return states_at_most_max(weight.shape[-1])


SPEC = registry.register(OpSpec(
    name="blur_hebbian",
    reference=blur_hebbian_reference,
    fake=fake_blur_hebbian,
    kernels={
        "cpp": Kernel(dtypes=(torch.float32, torch.float64), supports=_states_at_most_max),
        "cuda": Kernel(dtypes=(torch.float32, torch.float64), supports=_states_at_most_max),
        "triton": Kernel(dtypes=(torch.float32,), supports=_states_at_most_max),
    },
))


def _per_copy(name: str, value: Tensor | float, T: int, like: Tensor) -> Tensor:
    """decay or lr as a (T,) tensor; its finiteness is checked by the C++/CUDA kernels when they run, and here
    for the other backends. Under torch.compile the finiteness of a tensor is data that Dynamo cannot branch
    on: only the shapes are checked then."""
    if isinstance(value, Tensor) and torch.compiler.is_compiling():
        if value.dim() != 0 and value.shape != (T,):
            per_copy_scalar("blur_hebbian", name, value, T, like)  # raises the shape error
        return value.expand(T).to(like.dtype)
    return per_copy_scalar("blur_hebbian", name, value, T, like)


def blur_hebbian(weight: Tensor, pre: Tensor, post: Tensor, pre_mix: Tensor, post_mix: Tensor,
                 decay: Tensor | float, lr: Tensor | float, normalize: bool = True, oja: bool = False,
                 backend: str | None = None) -> Tensor:
    """One Hebbian update of every synapse, reading and writing the synapses once.

    Args:
        weight: (T, I, J, k) synapses of T independent networks.
        pre: (T, batch, I, k) states of the layer's input neurons; post: (T, batch, J, k) of its outputs.
        pre_mix: (k, k) or (T, k, k), ν̃: p[t,b,i,c] = Σ_e pre[t,b,i,e] pre_mix[e,c].
        post_mix: (k, k) or (T, k, k), μ̃: q[t,b,j,c] = Σ_d post_mix[c,d] post[t,b,j,d].
        decay, lr: f̃ and η̃, floats or tensors of shape () or (T,); must be finite.
        normalize: divide each synapse column (t, ·, j, c) by its L2 norm over the inputs afterwards.
        oja: subtract lr·Σ_b q[t,b,j,c]²·weight (Oja's decay).
        backend: "reference", "cpp", "cuda", "triton", or None for the fastest usable one.

    Returns:
        (T, I, J, k): decay·weight + lr·Σ_b p ⊗ q (then Oja, then normalization). Differentiable w.r.t.
        every tensor input.
    """
    require_tensors("blur_hebbian", weight=weight)
    check_weight(weight)  # before T is read from it
    T = weight.shape[0]
    decay = _per_copy("decay", decay, T, weight)
    lr = _per_copy("lr", lr, T, weight)
    args = (weight, pre, post, pre_mix, post_mix, decay, lr, normalize, oja)
    check_args(*args)
    name = choose_backend("blur_hebbian", backend, *args)
    if name in ("reference", "triton") and not torch.compiler.is_compiling():
        require_finite("blur_hebbian", decay=decay, lr=lr)
    if name == "reference":
        return blur_hebbian_reference(*args)
    if name == "triton":
        from metalearn_ext.ops.blur_hebbian.triton import blur_hebbian_triton

        return blur_hebbian_triton(*args)
    return torch.ops.metalearn_ext.blur_hebbian(*args)  # cpp or cuda: by device
