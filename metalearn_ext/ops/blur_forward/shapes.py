"""blur_forward's argument checks and fake (shape-only) implementation; the messages are the C++ ones
(csrc/blur_forward.cpp, csrc/blur_step.cpp)."""
from __future__ import annotations

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str
from metalearn_ext.ops.blur_step.shapes import check_activations, check_genes, check_layers, require_weight_list

OP = "blur_forward"


def check_args(weights, x, eta, nu, hidden_activation, output_activation) -> None:
    require_weight_list(OP, weights)
    require_tensors(OP, **{f"weights[{l}]": w for l, w in enumerate(weights)}, x=x, eta=eta, nu=nu)
    check_activations(OP, hidden_activation, output_activation)
    T, D, k = check_layers(OP, weights, label_state=False)
    L = len(weights)
    if x.dim() != 3 or x.shape[0] != T or x.shape[2] != D:
        raise ValueError(f"{OP}: x must be of shape (T, batch, D) = {shape_str(T, 'batch', D)} (T, D from "
                         f"weights[0]), got {shape_str(*x.shape)}")
    check_genes(OP, L, T, k, {"eta": eta}, {"nu": nu})
    require_like(OP, "weights[0]", weights[0], [*((f"weights[{l}]", w) for l, w in enumerate(weights)), ("x", x),
                                                ("eta", eta), ("nu", nu)])


def fake_blur_forward(weights, x, eta, nu, hidden_activation, output_activation):
    return x.new_empty((x.shape[0], x.shape[1], weights[-1].shape[2]))


def fake_blur_forward_backward(grad_pred, weights, x, eta, nu, hidden_activation, output_activation, x_grad=True):
    return [w.new_empty(w.shape) for w in weights], x.new_empty(x.shape), eta.new_empty(eta.shape), \
        nu.new_empty(nu.shape)
