"""`blur_propagate`: BLUR's forward or backward pass through one layer of k-state synapses (specs/blur.md §3)."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops.blur_propagate.reference import blur_propagate_reference, mix_states
from metalearn_ext.ops.blur_propagate.shapes import check_args, fake_blur_propagate
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.registry import Kernel, OpSpec, Verdict

__all__ = ["MAX_STATES", "SPEC", "blur_propagate", "blur_propagate_reference", "check_args", "mix_states",
           "states_at_most_max"]

MAX_STATES = 64  # the compiled kernels keep one neuron's k states in fixed-size arrays


def states_at_most_max(k: int) -> Verdict:
    """Whether the compiled kernels of the BLUR ops take k states."""
    return k <= MAX_STATES, f"supports k <= {MAX_STATES} states, got k={k}"


def _states_at_most_max(a: Tensor, weight: Tensor, *args) -> Verdict:
    return states_at_most_max(weight.shape[-1])


SPEC = registry.register(OpSpec(
    name="blur_propagate",
    reference=blur_propagate_reference,
    fake=fake_blur_propagate,
    kernels={
        "cpp": Kernel(dtypes=(torch.float32, torch.float64), supports=_states_at_most_max),
        "cuda": Kernel(dtypes=(torch.float32, torch.float64), supports=_states_at_most_max),
        "triton": Kernel(dtypes=(torch.float32,), supports=_states_at_most_max),
    },
))


def blur_propagate(a: Tensor, weight: Tensor, mix: Tensor, transpose: bool = False,
                   backend: str | None = None) -> Tensor:
    """k batched matrix products with a k×k state mix folded in.

    Args:
        a: (T, batch, I, k) neuron states of the layer's inputs, or (T, batch, J, k) of its outputs
            when transpose=True (the backward pass).
        weight: (T, I, J, k) synapses of T independent networks; channel c talks to state c.
        mix: (k, k) shared or (T, k, k) per copy: ν for the forward pass, μ for the backward.
        transpose: False: out[t,b,j,c] = Σ_i weight[t,i,j,c] Σ_d mix[c,d] a[t,b,i,d];
            True: out[t,b,i,c] = Σ_j weight[t,i,j,c] Σ_d mix[c,d] a[t,b,j,d].
        backend: "reference", "cpp", "cuda", "triton", or None for the fastest usable one.

    Returns:
        (T, batch, J, k), or (T, batch, I, k) when transpose=True. Differentiable w.r.t. a, weight, mix.
    """
    check_args(a, weight, mix, transpose)
    name = choose_backend("blur_propagate", backend, a, weight, mix, transpose)
    if name == "reference":
        return blur_propagate_reference(a, weight, mix, transpose)
    if name == "triton":
        from metalearn_ext.ops.blur_propagate.triton import blur_propagate_triton

        return blur_propagate_triton(a, weight, mix, transpose)
    return torch.ops.metalearn_ext.blur_propagate(a, weight, mix, transpose)  # cpp or cuda: by device
