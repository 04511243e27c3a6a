"""`blur_step`: one whole BLUR learning step (specs/blur.md §2) — forward through every layer, the label into
the output, the backward pass through the hidden layers, the Hebbian update and normalization of every layer —
as one C++ call, and its gradient as one more."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import registry
from metalearn_ext.ops.blur_propagate import MAX_STATES
from metalearn_ext.ops.blur_step import cpp
from metalearn_ext.ops.blur_step.reference import ACTIVATIONS, blur_step_reference
from metalearn_ext.ops.blur_step.shapes import check_args, fake_blur_step
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.registry import Kernel, OpSpec, Verdict

__all__ = ["ACTIVATIONS", "SPEC", "blur_step", "blur_step_reference", "check_args"]


def _states_at_most_max(weights: list[Tensor], *args) -> Verdict:
    k = weights[0].shape[-1]
    return k <= MAX_STATES, f"supports k <= {MAX_STATES} states, got k={k}"


SPEC = registry.register(OpSpec(
    name="blur_step",
    reference=blur_step_reference,
    fake=fake_blur_step,
    kernels={"cpp": Kernel(dtypes=(torch.float32, torch.float64), supports=_states_at_most_max)},
    register_compiled=cpp.register,
))


def blur_step(weights: list[Tensor], x: Tensor, code: Tensor, f: Tensor, eta: Tensor, f_hebb: Tensor,
              eta_hebb: Tensor, nu: Tensor, mu: Tensor, nu_hebb: Tensor, mu_hebb: Tensor, normalize: bool = True,
              oja: bool = False, hidden_activation: str = "relu_tanh", output_activation: str = "tanh",
              backend: str | None = None) -> tuple[list[Tensor], Tensor]:
    """One learning step of a BLUR network of L layers (nn.BLUR.learning_step), fused.

    Args:
        weights: per layer (T, n_l, n_{l+1}, k) synapses of T independent networks.
        x: (T, batch, n_0) standardized inputs; code: (T, batch, C) the labels' code (one-hot or ±1).
        f, eta, f_hebb, eta_hebb: the scalar genes of every layer, (L,) shared by the copies or (L, T).
        nu, mu, nu_hebb, mu_hebb: the k×k genes of every layer, (L, k, k) or (L, T, k, k).
        normalize, oja: as in `blur_hebbian`.
        hidden_activation, output_activation: σ of the hidden layers / of the output: "relu_tanh", "tanh"
            or "identity".
        backend: "reference", "cpp", or None for the fastest usable one.

    Returns:
        (new weights per layer, pred (T, batch, C): state 0 of the output before the update). Differentiable
        w.r.t. every tensor input (the cpp backend: one C++ autograd node per step).
    """
    args = (weights, x, code, f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb, normalize, oja,
            hidden_activation, output_activation)
    check_args(*args)
    if choose_backend("blur_step", backend, *args) == "reference":
        return blur_step_reference(*args)
    new, pred = torch.ops.metalearn_ext.blur_step(*args)
    return list(new), pred
