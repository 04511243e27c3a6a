"""blur_forward's argument checks and fake (shape-only) implementation; the messages are the C++ ones
(csrc/blur_forward.cpp, csrc/blur_step.cpp)."""
from __future__ import annotations

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str
from metalearn_ext.ops.blur_step.reference import ACTIVATIONS

OP = "blur_forward"


def check_args(weights, x, eta, nu, hidden_activation, output_activation) -> None:
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError(f"{OP}: weights must be a non-empty list of per-layer synapses (T, n_l, n_{{l+1}}, k), "
                         f"got {type(weights).__name__ if not isinstance(weights, (list, tuple)) else 'an empty list'}")
    require_tensors(OP, **{f"weights[{l}]": w for l, w in enumerate(weights)}, x=x, eta=eta, nu=nu)
    for name, act in (("hidden_activation", hidden_activation), ("output_activation", output_activation)):
        if act not in ACTIVATIONS:
            raise ValueError(f"{OP}: {name} must be one of 'relu_tanh', 'tanh', 'identity', got {act!r}")
    w0 = weights[0]
    if w0.dim() != 4 or w0.numel() == 0:
        raise ValueError(f"{OP}: weights[0] must be a non-empty tensor of shape (T, n_0, n_1, k), got "
                         f"{shape_str(*w0.shape)}")
    T, D, _, k = w0.shape
    for l in range(1, len(weights)):
        w, n = weights[l], weights[l - 1].shape[2]
        if w.dim() != 4 or w.shape[0] != T or w.shape[1] != n or w.shape[2] < 1 or w.shape[3] != k:
            raise ValueError(f"{OP}: weights[{l}] must be of shape (T, n_{l}, n_{l + 1}, k) = "
                             f"{shape_str(T, n, f'n_{l + 1}', k)} (T, k from weights[0], n_{l} from "
                             f"weights[{l - 1}]), got {shape_str(*w.shape)}")
    L = len(weights)
    if x.dim() != 3 or x.shape[0] != T or x.shape[2] != D:
        raise ValueError(f"{OP}: x must be of shape (T, batch, D) = {shape_str(T, 'batch', D)} (T, D from "
                         f"weights[0]), got {shape_str(*x.shape)}")
    if eta.shape != (L,) and eta.shape != (L, T):
        raise ValueError(f"{OP}: eta must be of shape (L,) = {shape_str(L)} or (L, T) = {shape_str(L, T)} "
                         f"(L layers, T copies from weights), got {shape_str(*eta.shape)}")
    if nu.shape != (L, k, k) and nu.shape != (L, T, k, k):
        raise ValueError(f"{OP}: nu must be of shape (L, k, k) = {shape_str(L, k, k)} or (L, T, k, k) = "
                         f"{shape_str(L, T, k, k)} (L layers, T copies, k states from weights), got "
                         f"{shape_str(*nu.shape)}")
    require_like(OP, "weights[0]", w0, [*((f"weights[{l}]", w) for l, w in enumerate(weights)), ("x", x),
                                        ("eta", eta), ("nu", nu)])


def fake_blur_forward(weights, x, eta, nu, hidden_activation, output_activation):
    return x.new_empty((x.shape[0], x.shape[1], weights[-1].shape[2]))


def fake_blur_forward_backward(grad_pred, weights, x, eta, nu, hidden_activation, output_activation, x_grad=True):
    return [w.new_empty(w.shape) for w in weights], x.new_empty(x.shape), eta.new_empty(eta.shape), \
        nu.new_empty(nu.shape)
