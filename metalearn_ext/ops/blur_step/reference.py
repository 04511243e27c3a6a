"""BLUR's fused learning step in plain PyTorch (specs/blur.md §2; nn.BLUR.learning_step), composed of the
references of blur_propagate and blur_hebbian: the truth the fused kernel is tested against."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops.blur_hebbian.reference import blur_hebbian_reference
from metalearn_ext.ops.blur_propagate.reference import blur_propagate_reference

ACTIVATIONS = {"relu_tanh": lambda z: torch.relu(torch.tanh(z)), "tanh": torch.tanh, "identity": lambda z: z}


def _scale(s: Tensor) -> Tensor:
    """A layer's scalar gene () or (T,), shaped to scale neuron states (T, batch, n, k)."""
    return s.view(-1, 1, 1, 1) if s.dim() == 1 else s


def blur_step_reference(weights: list[Tensor], x: Tensor, code: Tensor, f: Tensor, eta: Tensor, f_hebb: Tensor,
                        eta_hebb: Tensor, nu: Tensor, mu: Tensor, nu_hebb: Tensor, mu_hebb: Tensor,
                        normalize: bool = True, oja: bool = False, hidden_activation: str = "relu_tanh",
                        output_activation: str = "tanh") -> tuple[list[Tensor], Tensor]:
    """One learning step: neuron states start at zero with x in state 0 of layer 0; forward a ← σ(η·propagate(a,
    w, ν)) through every layer; pred = state 0 of the output, which then becomes [pred, code, 0, …]; backward
    a_l ← σ_hidden(f·a_l + η·propagate(a_{l+1}, w_l, μ, transpose)) for l = L−1 … 1; Hebbian update of every
    layer with ν̃, μ̃, f̃, η̃.

    Shapes: weights per layer (T, n_l, n_{l+1}, k); x (T, batch, n_0); code (T, batch, C); genes stacked over
    the L layers: f, eta, f_hebb, eta_hebb (L,) or (L, T), nu, mu, nu_hebb, mu_hebb (L, k, k) or (L, T, k, k).
    Returns (new weights, pred (T, batch, C)).
    """
    L, T, k = len(weights), x.shape[0], weights[0].shape[-1]
    a = torch.cat([x.unsqueeze(-1), x.new_zeros(*x.shape, k - 1)], -1)
    acts = [a]
    for l, w in enumerate(weights):
        act = ACTIVATIONS[output_activation if l == L - 1 else hidden_activation]
        a = act(_scale(eta[l]) * blur_propagate_reference(a, w, nu[l]))
        acts.append(a)
    pred = acts[-1][..., 0]
    acts[-1] = torch.cat([pred.unsqueeze(-1), code.unsqueeze(-1), pred.new_zeros(*pred.shape, k - 2)], -1)
    act = ACTIVATIONS[hidden_activation]
    for l in range(L - 1, 0, -1):
        msg = blur_propagate_reference(acts[l + 1], weights[l], mu[l], transpose=True)
        acts[l] = act(_scale(f[l]) * acts[l] + _scale(eta[l]) * msg)
    new = [blur_hebbian_reference(w, acts[l], acts[l + 1], nu_hebb[l], mu_hebb[l], f_hebb[l].expand(T),
                                  eta_hebb[l].expand(T), normalize, oja) for l, w in enumerate(weights)]
    return new, pred
