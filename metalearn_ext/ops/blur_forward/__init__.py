"""`blur_forward`: BLUR's forward pass alone (nn.BLUR.predict, the forward half of `blur_step`) through every
layer as one C++ call, and its gradient as one more."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops.blur_forward import cpp
from metalearn_ext.ops.blur_forward.reference import blur_forward_reference
from metalearn_ext.ops.blur_forward.shapes import check_args, fake_blur_forward
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.registry import Kernel, OpSpec

__all__ = ["SPEC", "blur_forward", "blur_forward_reference", "check_args"]

SPEC = registry.register(OpSpec(
    name="blur_forward",
    reference=blur_forward_reference,
    fake=fake_blur_forward,
    kernels={"cpp": Kernel(dtypes=(torch.float32, torch.float64))},  # blur_step's direct kernel, forward only
    register_compiled=cpp.register,
))


def blur_forward(weights: list[Tensor], x: Tensor, eta: Tensor, nu: Tensor, hidden_activation: str = "relu_tanh",
                 output_activation: str = "tanh", backend: str | None = None) -> Tensor:
    """The forward pass of a BLUR network of L layers from zeroed neuron states (nn.BLUR.predict), fused.

    Args:
        weights: per layer (T, n_l, n_{l+1}, k) synapses of T independent networks.
        x: (T, batch, n_0) standardized inputs, written into state 0 of layer 0.
        eta: (L,) shared by the copies or (L, T); nu: (L, k, k) or (L, T, k, k) — the genes η and ν of every layer.
        hidden_activation, output_activation: σ of the hidden layers / of the output: "relu_tanh", "tanh" or
            "identity".
        backend: "reference", "cpp", or None for the fastest usable one.

    Returns:
        pred (T, batch, C): state 0 of the output. Differentiable w.r.t. every tensor input (the cpp backend: one
        C++ autograd node per call).
    """
    args = (weights, x, eta, nu, hidden_activation, output_activation)
    check_args(*args)
    if choose_backend("blur_forward", backend, *args) == "reference":
        return blur_forward_reference(*args)
    return torch.ops.metalearn_ext.blur_forward(*args)
