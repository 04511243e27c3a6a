"""BLUR's forward pass alone (nn.BLUR.predict; specs/blur.md §2) in plain PyTorch, composed of blur_propagate's
reference: the truth the cpp kernel is tested against."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops.blur_propagate.reference import blur_propagate_reference
from metalearn_ext.ops.blur_step.reference import ACTIVATIONS, _scale


def blur_forward_reference(weights: list[Tensor], x: Tensor, eta: Tensor, nu: Tensor,
                           hidden_activation: str = "relu_tanh", output_activation: str = "tanh") -> Tensor:
    """Neuron states start at zero with x in state 0 of layer 0; a ← σ(η·propagate(a, w, ν)) through every layer
    (σ: hidden_activation, output_activation on the last); returns pred = state 0 of the output, (T, batch, C).

    Shapes: weights per layer (T, n_l, n_{l+1}, k); x (T, batch, n_0); eta (L,) or (L, T); nu (L, k, k) or
    (L, T, k, k).
    """
    L, k = len(weights), weights[0].shape[-1]
    a = torch.cat([x.unsqueeze(-1), x.new_zeros(*x.shape, k - 1)], -1)
    for l, w in enumerate(weights):
        act = ACTIVATIONS[output_activation if l == L - 1 else hidden_activation]
        # the f·a term of spec §2 vanishes here: the states start at zero
        a = act(_scale(eta[l]) * blur_propagate_reference(a, w, nu[l]))
    return a[..., 0]
