"""blur_forward, BLUR's forward pass alone (nn.BLUR.predict) as one call: the cpp kernel against the reference
(the output and every gradient, in float64, over depths 1–3, k = 2, 3, 4, genome layouts, activations, batch 1 and
odd sizes), float32, strided inputs, gradcheck, opcheck, errors naming the argument, a double backward through
the reference, and nn.BLUR's fused predict against its per-op predict (values and meta-gradients).
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import metalearn_ext
from metalearn_ext.nn import BLUR
from metalearn_ext.ops.blur_forward import blur_forward, blur_forward_reference

OP = "blur_forward"
SIZES = [(6, 5), (6, 4, 3), (7, 5, 4, 3)]
ACTS = [("relu_tanh", "tanh"), ("tanh", "identity"), ("identity", "relu_tanh")]
GENOMES = ["shared", "per_layer", "per_copy"]
NAMES = ["x", "eta", "nu"]


@pytest.fixture(autouse=True)
def _cpp():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def make_inputs(sizes, k, genome, T=3, B=4, dtype=torch.float64, seed=0) -> tuple[list, list]:
    """(leaves requiring grad, op arguments); a shared genome is one gene expanded over the layers."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    L = len(sizes) - 1
    weights = [r(T, a, b, k) / a ** 0.5 for a, b in zip(sizes, sizes[1:])]
    x = r(T, B, sizes[0])
    lead = {"shared": (1,), "per_layer": (L,), "per_copy": (L, T)}[genome]
    eta, nu = 1 + 0.3 * r(*lead), r(*lead, k, k) / k ** 0.5
    leaves = [t.requires_grad_(True) for t in (*weights, x, eta, nu)]
    return leaves, [weights, x, *(v.expand(L, *v.shape[1:]) for v in (eta, nu))]


def outputs_and_grads(fn, leaves, args, acts, seed=1):
    pred = fn(*args, *acts)
    up = torch.randn(pred.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(pred.dtype)
    grads = torch.autograd.grad(pred, leaves, up, allow_unused=True)
    return pred, [torch.zeros_like(t) if d is None else d for d, t in zip(grads, leaves)]


def check(leaves, args, acts):
    got, got_g = outputs_and_grads(lambda *a: blur_forward(*a, backend="cpp"), leaves, args, acts)
    want, want_g = outputs_and_grads(blur_forward_reference, leaves, args, acts)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    names = [f"weights[{l}]" for l in range(len(args[0]))] + NAMES
    for name, a, b in zip(names, got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("genome", GENOMES)
@pytest.mark.parametrize("acts", ACTS, ids=lambda a: "+".join(a))
def test_matches_reference(sizes, k, genome, acts):
    leaves, args = make_inputs(sizes, k, genome, seed=hash((sizes, k, genome, acts)) % 2**31)
    check(leaves, args, acts)


# Tile edges of the direct kernel (64-byte padding, VL×VL transposes), a batch of 1, odd batches, k = 1 and 5.
EDGE_CASES = [((33, 18, 5), 4, 17), ((16, 16), 2, 1), ((40, 9, 16, 3), 3, 16), ((8, 32), 2, 65), ((24, 1, 7), 2, 9),
              ((5, 3), 1, 3), ((6, 4, 3), 5, 7)]


@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: f"{'-'.join(map(str, c[0]))}_k{c[1]}_B{c[2]}")
@pytest.mark.parametrize("genome", GENOMES)
def test_matches_reference_at_tile_edges(case, genome):
    sizes, k, B = case
    leaves, args = make_inputs(sizes, k, genome, T=2, B=B, seed=hash((case, genome)) % 2**31)
    check(leaves, args, ("relu_tanh", "tanh"))


def test_empty_batch():
    leaves, args = make_inputs((6, 4, 3), 2, "per_layer", B=0)
    got, got_g = outputs_and_grads(lambda *a: blur_forward(*a, backend="cpp"), leaves, args, ("relu_tanh", "tanh"))
    assert got.shape == (3, 0, 3)
    assert all(not g.any() for g in got_g)


def test_float32_matches_float64_reference():
    """The quick config's sizes and a query batch of 64 in float32 (vectorized tanh, 16-lane tiles)."""
    leaves, args = make_inputs((64, 20, 5), 2, "per_copy", T=2, B=64, seed=13)
    L = len(args[0])
    low = [t.detach().float().requires_grad_(True) for t in leaves]
    largs = [low[:L], low[L], *(v.expand(L, *v.shape[1:]) for v in low[L + 1:])]
    acts = ("relu_tanh", "tanh")
    want, want_g = outputs_and_grads(blur_forward_reference, leaves, args, acts)
    got, got_g = outputs_and_grads(lambda *a: blur_forward(*a, backend="cpp"), low, largs, acts)
    for a, b in zip([got, *got_g], [want, *want_g]):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=2e-5 * max(1.0, b.abs().max().item()))


def test_non_contiguous_inputs_and_upstream():
    leaves, args = make_inputs((7, 5, 3), 2, "per_copy", T=2, B=3, seed=6)
    weights, x, eta, nu = args
    args = [[w.transpose(1, 2).contiguous().transpose(1, 2) for w in weights], x.transpose(0, 1).contiguous()
            .transpose(0, 1), eta.t().contiguous().t(), nu.transpose(0, 1).contiguous().transpose(0, 1)]

    def grads(fn):
        pred = fn(*args, "relu_tanh", "tanh")
        loss = (pred.transpose(1, 2) * torch.arange(3.0, dtype=torch.float64)).sum() + pred[:, ::2].pow(2).sum()
        return [pred, *torch.autograd.grad(loss, leaves)]

    for a, b in zip(grads(lambda *a: blur_forward(*a, backend="cpp")), grads(blur_forward_reference)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_inputs_untouched():
    leaves, args = make_inputs((6, 4, 3), 2, "per_layer", seed=8)
    before = [t.clone() for t in leaves]
    outputs_and_grads(lambda *a: blur_forward(*a, backend="cpp"), leaves, args, ("relu_tanh", "tanh"))
    assert all(torch.equal(a, b) for a, b in zip(leaves, before)), "inputs were modified in place"


def test_gradcheck_float64():
    for genome, acts in [("per_copy", ("relu_tanh", "tanh")), ("per_layer", ("tanh", "identity"))]:
        leaves, args = make_inputs((4, 3, 2), 2, genome, T=2, B=2, seed=9)
        L = len(args[0])

        def fn(*t):
            genes = [v.expand(L, *v.shape[1:]) if v.shape[0] != L else v for v in t[L + 1:]]
            return blur_forward(list(t[:L]), t[L], *genes, *acts, backend="cpp")

        assert torch.autograd.gradcheck(fn, leaves)


def test_opcheck():
    _, args = make_inputs((5, 4, 3), 2, "per_copy", T=2, B=3, dtype=torch.float32, seed=10)
    weights, x, eta, nu = args
    args = [weights, x, eta.detach().clone().requires_grad_(True), nu.detach().clone().requires_grad_(True)]
    torch.library.opcheck(torch.ops.metalearn_ext.blur_forward.default, (*args, "relu_tanh", "tanh"))


def test_double_backward_through_the_reference():
    leaves, args = make_inputs((5, 4, 3), 2, "per_layer", T=2, B=3, seed=11)

    def grad_norm(fn):
        loss = (fn(*args, "relu_tanh", "tanh") ** 3).sum()
        g = torch.autograd.grad(loss, leaves, create_graph=True)
        return torch.autograd.grad(sum((d ** 2).sum() for d in g), leaves, allow_unused=True)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = grad_norm(lambda *a: blur_forward(*a, backend="cpp"))
    want = grad_norm(blur_forward_reference)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    from metalearn_ext.ops import autograd as ops_autograd
    assert "metalearn_ext::blur_forward" in ops_autograd._warned_double_backward  # warned once (here or earlier)
    del seen


def test_bad_inputs_raise_naming_the_argument():
    _, args = make_inputs((6, 4, 3), 2, "per_layer", dtype=torch.float32, seed=12)
    weights, x, eta, nu = [[w.detach() for w in args[0]], *(a.detach() for a in args[1:])]
    acts = ("relu_tanh", "tanh")
    raw = lambda *a: torch.ops.metalearn_ext.blur_forward(*a)  # noqa: E731  the C++ checks
    public = lambda *a: blur_forward(*a, backend="cpp")  # noqa: E731  the Python checks
    for fn in (raw, public):
        with pytest.raises(ValueError, match=r"weights\[1\] must be of shape \(T, n_1, n_2, k\) = \(3, 4, n_2, 2\)"):
            fn([weights[0], weights[1].repeat(1, 1, 1, 2)], x, eta, nu, *acts)
        with pytest.raises(ValueError, match=r"x must be of shape \(T, batch, D\) = \(3, batch, 6\)"):
            fn(weights, x[..., :5], eta, nu, *acts)
        with pytest.raises(ValueError, match=r"x must be of dtype"):
            fn(weights, x.double(), eta, nu, *acts)
        with pytest.raises(ValueError, match=r"weights\[0\] must be float32 or float64|weights\[0\] must be a "
                                             r"floating-point tensor"):
            fn([w.long() for w in weights], x, eta, nu, *acts)
        with pytest.raises(ValueError, match=r"eta must be of shape \(L,\) = \(2\) or \(L, T\) = \(2, 3\)"):
            fn(weights, x, eta[:1], nu, *acts)
        with pytest.raises(ValueError, match=r"nu must be of shape \(L, k, k\) = \(2, 2, 2\)"):
            fn(weights, x, eta, nu[:, :1], *acts)
        with pytest.raises(ValueError, match="output_activation must be one of"):
            fn(weights, x, eta, nu, "tanh", "relu")
        with pytest.raises(ValueError, match=r"weights\[0\] must be a non-empty tensor"):
            fn([weights[0][:, :0]], x, eta[:1], nu[:1], *acts)
    with pytest.raises(ValueError, match=r"blur_forward_backward: grad_pred must be of shape \(T, batch, C\) = "
                                         r"\(3, 4, 3\)"):
        torch.ops.metalearn_ext.blur_forward_backward(torch.zeros(3, 4, 2), weights, x, eta, nu, *acts)


# ------------------------------------------------------------------------------------------------ nn.BLUR
def _blur(fused, **kw) -> BLUR:
    torch.manual_seed(0)
    return BLUR([64, 20, 5], 2, per_layer_genome=True, learn_init_scale=True, fused=fused, **kw).double()


def test_blur_chooses_the_fused_forward():
    w, x = [torch.zeros(2, 64, 20, 2), torch.zeros(2, 3, 64)], torch.zeros(2, 3, 64)
    w = [torch.zeros(2, 64, 20, 2), torch.zeros(2, 20, 5, 2)]
    m = BLUR([64, 20, 5])
    p, per_copy = m._params(None)
    assert m._fused_forward_genes(w, x, p, per_copy) is not None
    for kw in (dict(fused=False), dict(backend="reference")):
        assert BLUR([64, 20, 5], **kw)._fused_forward_genes(w, x, p, per_copy) is None
    m = BLUR([64, 20, 5], fused=True)
    with pytest.raises(RuntimeError, match="fused=True cannot run here"):
        m._fused_forward_genes([v.half() for v in w], x.half(), {n: v.half() for n, v in p.items()}, per_copy)


@pytest.mark.parametrize("per_copy", [False, True], ids=["shared", "per_copy"])
@pytest.mark.parametrize("kw", [dict(), dict(per_layer_genome=False, hidden_activation="tanh",
                                              output_activation="identity", states=3)], ids=["quick", "k3"])
def test_predict_fused_equals_per_op(per_copy, kw):
    """predict after an unroll (the meta-loss of the benchmark), float64: logits and the meta-gradients agree."""
    T, U, B = 4, 2, 16
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(T, U, B, 64, generator=g, dtype=torch.float64), torch.randint(5, (T, U, B), generator=g)
    qx, qy = torch.randn(T, 33, 64, generator=g, dtype=torch.float64), torch.randint(5, (T, 33), generator=g)
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        kw2 = {"per_layer_genome": True, **kw}
        m = BLUR([64, 20, 5], kw2.pop("states", 2), learn_init_scale=True, fused=fused, **kw2).double()
        theta = torch.nn.utils.parameters_to_vector(m.parameters()).detach()
        theta = (theta + 0.01 * torch.randn(T, theta.numel(), generator=torch.Generator().manual_seed(1),
                                             dtype=torch.float64)).requires_grad_(True)
        params = theta if per_copy else None
        w, _ = m.unroll(m.initial_state(T, torch.Generator().manual_seed(2), params), x, y, params)
        logits = m.predict(qx, w, params)
        loss = F.cross_entropy(logits.transpose(1, 2), qy)
        wrt = [theta] if per_copy else list(m.parameters())
        results.append((logits, torch.autograd.grad(loss, wrt, allow_unused=True)))
    (lf, gf), (lp, gp) = results
    torch.testing.assert_close(lf, lp, rtol=1e-11, atol=1e-11)
    for a, b in zip(gf, gp):
        if a is None or b is None:
            assert a is None and b is None or (a if b is None else b).abs().max() == 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_predict_runs_blur_forward_once(monkeypatch):
    """The fused predict is one blur_forward call and no blur_propagate."""
    m = _blur(None)
    w = m.initial_state(2, torch.Generator().manual_seed(0))
    calls = []
    import metalearn_ext.nn.blur as blur_module
    monkeypatch.setattr(blur_module, "blur_propagate", lambda *a, **k: calls.append("propagate"))
    out = m.predict(torch.randn(2, 5, 64, dtype=torch.float64), w)
    assert out.shape == (2, 5, 5) and not calls


@pytest.mark.parametrize("case", [((6, 4, 3), 2, 5), ((33, 18, 5), 4, 17), ((64, 20, 5), 2, 64)],
                         ids=lambda c: f"{'-'.join(map(str, c[0]))}_k{c[1]}_B{c[2]}")
def test_backward_without_x_gradient(case):
    """x_grad=False (what the autograd node passes when x needs no gradient, as a meta-step's query inputs) takes
    layer 0's gradients from x directly: the same gradients of weights, eta and nu."""
    sizes, k, B = case
    _, args = make_inputs(sizes, k, "per_copy", T=2, B=B, seed=B)
    weights, x, eta, nu = [[w.detach() for w in args[0]], *(a.detach() for a in args[1:])]
    up = torch.randn(2, B, sizes[-1], dtype=torch.float64)
    op = torch.ops.metalearn_ext.blur_forward_backward
    full = op(up, weights, x, eta, nu, "relu_tanh", "tanh", True)
    part = op(up, weights, x, eta, nu, "relu_tanh", "tanh", False)
    for a, b in zip([*full[0], *full[2:]], [*part[0], *part[2:]]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert part[1].shape == x.shape and not part[1].any()
    pred_x = blur_forward(weights, x.requires_grad_(True), eta.requires_grad_(True), nu, backend="cpp")
    assert torch.autograd.grad(pred_x, x, up)[0].abs().sum() > 0  # and with x requiring grad, x's gradient
