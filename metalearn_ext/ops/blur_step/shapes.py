"""blur_step's argument checks and fake (shape-only) implementation; the messages are the C++ ones
(csrc/blur_step.cpp)."""
from __future__ import annotations

from torch import Tensor

from metalearn_ext.ops._checks import require_like, require_tensors, shape_str
from metalearn_ext.ops.blur_step.reference import ACTIVATIONS

OP = "blur_step"
SCALARS = ("f", "eta", "f_hebb", "eta_hebb")
MATRICES = ("nu", "mu", "nu_hebb", "mu_hebb")


def require_weight_list(op: str, weights) -> None:
    """``weights`` a non-empty list or tuple (of the per-layer synapses), else a ValueError naming it."""
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError(f"{op}: weights must be a non-empty list of per-layer synapses (T, n_l, n_{{l+1}}, k), "
                         f"got {type(weights).__name__ if not isinstance(weights, (list, tuple)) else 'an empty list'}")


def check_activations(op: str, hidden_activation, output_activation) -> None:
    for name, act in (("hidden_activation", hidden_activation), ("output_activation", output_activation)):
        if act not in ACTIVATIONS:
            raise ValueError(f"{op}: {name} must be one of 'relu_tanh', 'tanh', 'identity', got {act!r}")


def check_layers(op: str, weights: list[Tensor], *, label_state: bool) -> tuple[int, int, int]:
    """Every layer (T, n_l, n_{l+1}, k), chained; with ``label_state`` k >= 2 (the label goes into state 1).
    Returns (T, D = n_0, k)."""
    w0 = weights[0]
    if w0.dim() != 4 or w0.numel() == 0:
        raise ValueError(f"{op}: weights[0] must be a non-empty tensor of shape (T, n_0, n_1, k), got "
                         f"{shape_str(*w0.shape)}")
    T, D, _, k = w0.shape
    if label_state and k < 2:
        raise ValueError(f"{op}: weights[0] must be of shape (T, n_0, n_1, k) with k >= 2 states (the label goes "
                         f"into state 1), got {shape_str(*w0.shape)}")
    for l in range(1, len(weights)):
        w, n = weights[l], weights[l - 1].shape[2]
        if w.dim() != 4 or w.shape[0] != T or w.shape[1] != n or w.shape[2] < 1 or w.shape[3] != k:
            raise ValueError(f"{op}: weights[{l}] must be of shape (T, n_{l}, n_{l + 1}, k) = "
                             f"{shape_str(T, n, f'n_{l + 1}', k)} (T, k from weights[0], n_{l} from "
                             f"weights[{l - 1}]), got {shape_str(*w.shape)}")
    return T, D, k


def check_genes(op: str, L: int, T: int, k: int, scalars: dict[str, Tensor], matrices: dict[str, Tensor]) -> None:
    """Scalar genes (L,) or (L, T); k×k genes (L, k, k) or (L, T, k, k); else a ValueError naming the gene."""
    for name, g in scalars.items():
        if g.shape != (L,) and g.shape != (L, T):
            raise ValueError(f"{op}: {name} must be of shape (L,) = {shape_str(L)} or (L, T) = {shape_str(L, T)} "
                             f"(L layers, T copies from weights), got {shape_str(*g.shape)}")
    for name, g in matrices.items():
        if g.shape != (L, k, k) and g.shape != (L, T, k, k):
            raise ValueError(f"{op}: {name} must be of shape (L, k, k) = {shape_str(L, k, k)} or (L, T, k, k) = "
                             f"{shape_str(L, T, k, k)} (L layers, T copies, k states from weights), got "
                             f"{shape_str(*g.shape)}")


def check_args(weights, x, code, f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb, normalize, oja,
               hidden_activation, output_activation) -> None:
    require_weight_list(OP, weights)
    require_tensors(OP, **{f"weights[{l}]": w for l, w in enumerate(weights)}, x=x, code=code)
    genes = dict(zip(SCALARS + MATRICES, (f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb)))
    require_tensors(OP, **genes)
    for name, flag in (("normalize", normalize), ("oja", oja)):
        if not isinstance(flag, bool):
            raise TypeError(f"{OP}: {name} must be a bool, got {type(flag).__name__}")
    check_activations(OP, hidden_activation, output_activation)
    T, D, k = check_layers(OP, weights, label_state=True)
    L, C = len(weights), weights[-1].shape[2]
    if x.dim() != 3 or x.shape[0] != T or x.shape[1] < 1 or x.shape[2] != D:
        raise ValueError(f"{OP}: x must be of shape (T, batch, D) = {shape_str(T, 'batch', D)} (T, D from "
                         f"weights[0]), got {shape_str(*x.shape)}")
    B = x.shape[1]
    if code.shape != (T, B, C):
        raise ValueError(f"{OP}: code must be of shape (T, batch, C) = {shape_str(T, B, C)} (batch from x, C from "
                         f"weights[-1]), got {shape_str(*code.shape)}")
    check_genes(OP, L, T, k, {n: genes[n] for n in SCALARS}, {n: genes[n] for n in MATRICES})
    require_like(OP, "weights[0]", weights[0], [*((f"weights[{l}]", w) for l, w in enumerate(weights)), ("x", x),
                                                ("code", code), *genes.items()])


def fake_blur_step(weights, x, code, f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb, normalize, oja,
                   hidden_activation, output_activation):
    return [w.new_empty(w.shape) for w in weights], x.new_empty((x.shape[0], x.shape[1], weights[-1].shape[2]))


def fake_blur_step_backward(grad_weights, grad_pred, weights, x, code, *genome_and_flags):
    return ([w.new_empty(w.shape) for w in weights], x.new_empty(x.shape), code.new_empty(code.shape),
            *(g.new_empty(g.shape) for g in genome_and_flags[:8]))
