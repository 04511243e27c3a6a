"""blur_step, the fused BLUR learning step: the cpp kernel against the reference (outputs and every gradient, in
float64, over depths, state counts, genome layouts, normalization, Oja and activations), gradcheck, opcheck,
errors naming the argument, a double backward, and nn.BLUR's fused path against its per-op path (values and
meta-gradients) and against SGD (the backprop genome).
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import metalearn_ext
from metalearn_ext.nn import BLUR
from metalearn_ext.ops.blur_step import blur_step, blur_step_reference
from tests.nn.test_blur import _batches, _sgd_linear_net

OP = "blur_step"
SIZES = [(6, 5), (6, 4, 3), (7, 5, 4, 3)]
ACTS = [("relu_tanh", "tanh"), ("tanh", "identity"), ("identity", "relu_tanh")]  # each σ hidden and output
GENOMES = ["shared", "per_layer", "per_copy"]


@pytest.fixture(autouse=True)
def _cpp():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def make_inputs(sizes, k, genome, T=3, B=4, dtype=torch.float64, seed=0) -> tuple[list, list]:
    """(leaves, op arguments): the leaves (requiring grad) are what gradients are taken of; a shared genome is
    one gene expanded over the layers (its gradient sums theirs)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    L = len(sizes) - 1
    weights = [r(T, a, b, k) / a ** 0.5 for a, b in zip(sizes, sizes[1:])]
    x, code = r(T, B, sizes[0]), r(T, B, sizes[-1])
    lead = {"shared": (1,), "per_layer": (L,), "per_copy": (L, T)}[genome]
    scalars = [1 + 0.3 * r(*lead), 1 + 0.3 * r(*lead), 1 + 0.1 * r(*lead), 0.1 * torch.rand(lead, generator=g,
                                                                                                 dtype=dtype)]
    matrices = [r(*lead, k, k) / k ** 0.5 for _ in range(4)]
    leaves = [t.requires_grad_(True) for t in (*weights, x, code, *scalars, *matrices)]
    genes = [v.expand(L, *v.shape[1:]) for v in scalars + matrices]
    return leaves, [weights, x, code, *genes]


def outputs_and_grads(fn, leaves, args, flags, upstream_seed=1, which="all"):
    new, pred = fn(*args, *flags)
    outs = {"all": [*new, pred], "pred": [pred], "weights": new}[which]
    g = torch.Generator().manual_seed(upstream_seed)
    ups = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, leaves, ups, allow_unused=True)
    return [*new, pred], [torch.zeros_like(t) if d is None else d for d, t in zip(grads, leaves)]


def check(leaves, args, flags, which="all"):
    cpp = lambda *a: blur_step(*a, backend="cpp")  # noqa: E731
    out, grads = outputs_and_grads(cpp, leaves, args, flags, which=which)
    want_out, want_grads = outputs_and_grads(blur_step_reference, leaves, args, flags, which=which)
    names = [f"weights[{l}]" for l in range(len(args[0]))] + ["x", "code", "f", "eta", "f_hebb", "eta_hebb", "nu",
                                                              "mu", "nu_hebb", "mu_hebb"]
    for name, got, want in zip([*names[:len(args[0])], "pred"], out, want_out):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=lambda m: f"output {name}: {m}")
    for name, got, want in zip(names, grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("genome", GENOMES)
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "nonorm"])
@pytest.mark.parametrize("oja", [False, True], ids=["hebb", "oja"])
@pytest.mark.parametrize("acts", ACTS, ids=lambda a: "+".join(a))
def test_matches_reference(sizes, k, genome, normalize, oja, acts):
    leaves, args = make_inputs(sizes, k, genome, seed=hash((sizes, k, genome, normalize, oja, acts)) % 2**31)
    check(leaves, args, (normalize, oja, *acts))


# The direct CPU kernel (csrc/cpu/blur_step_kernels.h) pads the batch and the input neurons to 64 bytes and
# converts layouts in VL×VL register tiles (VL = 8 doubles / 16 floats on AVX-512): sizes around and past
# those, a batch of 1, depths 1–3 and k = 2, 3, 4.
EDGE_CASES = [((33, 18, 5), 4, 17), ((16, 16), 2, 1), ((40, 9, 16, 3), 3, 16), ((8, 32), 2, 8), ((24, 1, 7), 2, 9)]


@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: f"{'-'.join(map(str, c[0]))}_k{c[1]}_B{c[2]}")
@pytest.mark.parametrize("genome", GENOMES)
@pytest.mark.parametrize("flags", [(True, False, "relu_tanh", "tanh"), (False, True, "tanh", "identity"),
                                   (True, True, "identity", "relu_tanh")], ids=["norm", "oja", "norm+oja"])
def test_matches_reference_at_tile_edges(case, genome, flags):
    sizes, k, B = case
    leaves, args = make_inputs(sizes, k, genome, T=2, B=B, seed=hash((case, genome, flags)) % 2**31)
    check(leaves, args, flags)


@pytest.mark.parametrize("k", [2, 4])
def test_float32_gradients_match_float64_reference(k):
    """The quick config's layer sizes and batch in float32 (the float kernels: vectorized tanh, 16-lane tiles)."""
    leaves, args = make_inputs((64, 20, 5), k, "per_copy", T=2, B=16, seed=13)
    flags = (True, True, "relu_tanh", "tanh")
    L = len(args[0])
    leaves32 = [t.detach().float().requires_grad_(True) for t in leaves]
    args32 = [leaves32[:L], leaves32[L], leaves32[L + 1], *(v.expand(L, *v.shape[1:]) for v in leaves32[L + 2:])]
    results = []
    for fn, lv, a in ((blur_step_reference, leaves, args), (lambda *a: blur_step(*a, backend="cpp"), leaves32, args32)):
        new, pred = fn(*a, *flags)
        g = torch.Generator().manual_seed(1)
        ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in (*new, pred)]
        results.append([*new, pred, *torch.autograd.grad([*new, pred], lv, ups)])
    for got, want in zip(results[1], results[0]):
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=2e-5 * scale)


def test_strided_upstream_gradients():
    """Upstream gradients as autograd hands them over: expanded (a sum's), transposed, sliced."""
    leaves, args = make_inputs((7, 5, 3), 2, "per_layer", T=2, B=3, seed=14)
    flags = (True, True, "relu_tanh", "tanh")

    def grads(fn):
        new, pred = fn(*args, *flags)
        loss = new[0].sum() + (new[1].transpose(1, 3) * torch.arange(2.0, dtype=torch.float64)[:, None, None, None]
                               ).sum() + pred[:, ::2].pow(2).sum()
        return torch.autograd.grad(loss, leaves)

    for got, want in zip(grads(lambda *a: blur_step(*a, backend="cpp")), grads(blur_step_reference)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("case", [((6, 4, 3), 2, 5), ((33, 18, 5), 4, 17), ((64, 20, 5), 2, 16), ((16, 16), 3, 1)],
                         ids=lambda c: f"{'-'.join(map(str, c[0]))}_k{c[1]}_B{c[2]}")
@pytest.mark.parametrize("flags", [(True, True, "relu_tanh", "tanh"), (False, False, "tanh", "identity")],
                         ids=["norm+oja", "plain"])
def test_backward_without_x_gradient(case, flags):
    """x_grad=False (what the autograd node passes when x needs no gradient, as a meta-step's standardized inputs)
    skips x's gradient and the work only it needs: every other gradient as with x_grad=True, x's zeros."""
    sizes, k, B = case
    leaves, args = make_inputs(sizes, k, "per_copy", T=2, B=B, seed=B + k)
    weights, x, code, *genes = [[w.detach() for w in args[0]], *(a.detach() for a in args[1:])]
    g = torch.Generator().manual_seed(3)
    ups = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in weights]
    op = torch.ops.metalearn_ext.blur_step_backward
    for grad_pred in (torch.randn(2, B, sizes[-1], generator=g, dtype=torch.float64), None):
        full = op(ups, grad_pred, weights, x, code, *genes, *flags, True)
        part = op(ups, grad_pred, weights, x, code, *genes, *flags, False)
        for a, b in zip([*full[0], *full[2:]], [*part[0], *part[2:]]):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        assert part[1].shape == x.shape and not part[1].any()
    # Through autograd (x a plain input, so the node passes x_grad=False): the reference's gradients.
    L = len(weights)
    rest = [t for i, t in enumerate(leaves) if i != L]
    args = [args[0], x, *args[2:]]
    got = outputs_and_grads(lambda *a: blur_step(*a, backend="cpp"), rest, args, flags)[1]
    want = outputs_and_grads(blur_step_reference, rest, args, flags)[1]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_non_finite_update_genes_raise_naming_them():
    _, args = make_inputs((6, 4, 3), 2, "per_copy", dtype=torch.float32, seed=15)
    weights, x, code, *genes = [[w.detach() for w in args[0]], *(a.detach() for a in args[1:])]
    flags = (True, False, "relu_tanh", "tanh")
    for slot, name in ((2, "f_hebb"), (3, "eta_hebb")):
        bad = list(genes)
        bad[slot] = genes[slot].clone()
        bad[slot][1, 2] = float("nan") if slot == 2 else float("inf")
        for fn in (torch.ops.metalearn_ext.blur_step, lambda *a: blur_step(*a, backend="cpp")):
            with pytest.raises(ValueError, match=rf"blur_step: {name} must be finite"):
                fn(weights, x, code, *bad, *flags)


@pytest.mark.parametrize("which", ["pred", "weights"])
def test_unused_outputs_count_as_zero(which):
    leaves, args = make_inputs((6, 4, 3), 3, "per_copy", seed=5)
    check(leaves, args, (True, True, "relu_tanh", "tanh"), which=which)


def test_non_contiguous_inputs():
    leaves, args = make_inputs((7, 5, 3), 2, "per_copy", T=2, B=3, seed=6)
    weights, x, code, *genes = args
    weights = [w.transpose(1, 2).contiguous().transpose(1, 2) for w in weights]
    x = x.transpose(0, 1).contiguous().transpose(0, 1)
    genes = [v.transpose(0, 1).contiguous().transpose(0, 1) for v in genes]
    args = [weights, x, code, *genes]
    new, pred = blur_step(*args, backend="cpp")
    want_new, want_pred = blur_step_reference(*args)
    for got, want in zip([*new, pred], [*want_new, want_pred]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_float32_matches_float64_reference():
    leaves, args = make_inputs((64, 20, 5), 2, "per_layer", T=2, B=16, seed=7)
    args = [[w.detach() for w in args[0]], *(a.detach() for a in args[1:])]
    args32 = [[w.float() for w in args[0]], *(a.float() for a in args[1:])]
    new, pred = blur_step(*args32, backend="cpp")
    want_new, want_pred = blur_step_reference(*args)
    for got, want in zip([*new, pred], [*want_new, want_pred]):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_inputs_untouched():
    leaves, args = make_inputs((6, 4, 3), 2, "per_layer", seed=8)
    before = [t.clone() for t in leaves]
    out, _ = outputs_and_grads(lambda *a: blur_step(*a, backend="cpp"), leaves, args, (True, True, "relu_tanh", "tanh"))
    assert all(torch.equal(a, b) for a, b in zip(leaves, before)), "inputs were modified in place"


def test_gradcheck_float64():
    for genome, normalize, oja in [("per_copy", True, True), ("per_layer", False, False)]:
        leaves, args = make_inputs((4, 3, 2), 2, genome, T=2, B=2, seed=9)
        L = len(args[0])

        def fn(*t):
            genes = [v.expand(L, *v.shape[1:]) if v.shape[0] != L else v for v in t[L + 2:]]
            new, pred = blur_step(list(t[:L]), t[L], t[L + 1], *genes, normalize, oja, "relu_tanh", "tanh",
                                  backend="cpp")
            return (*new, pred)

        assert torch.autograd.gradcheck(fn, leaves)


def test_opcheck():
    _, args = make_inputs((5, 4, 3), 2, "per_copy", T=2, B=3, dtype=torch.float32, seed=10)
    weights, x, code, *genes = args
    args = [weights, x, code.detach(), *(v.detach().clone().requires_grad_(True) for v in genes)]
    torch.library.opcheck(torch.ops.metalearn_ext.blur_step.default, (*args, True, False, "relu_tanh", "tanh"))


def test_double_backward_through_the_reference():
    leaves, args = make_inputs((5, 4, 3), 2, "per_layer", T=2, B=3, seed=11)
    flags = (True, True, "relu_tanh", "tanh")

    def grad_norm(fn):
        new, pred = fn(*args, *flags)
        loss = (new[-1] ** 2).sum() + (pred ** 3).sum()
        g = torch.autograd.grad(loss, leaves, create_graph=True)
        return torch.autograd.grad(sum((d ** 2).sum() for d in g), leaves, allow_unused=True)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*double backward")
        got = grad_norm(lambda *a: blur_step(*a, backend="cpp"))
    want = grad_norm(blur_step_reference)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_bad_inputs_raise_naming_the_argument():
    _, args = make_inputs((6, 4, 3), 2, "per_layer", dtype=torch.float32, seed=12)
    weights, x, code, *genes = [[w.detach() for w in args[0]], *(a.detach() for a in args[1:])]
    flags = (True, False, "relu_tanh", "tanh")
    raw = lambda *a: torch.ops.metalearn_ext.blur_step(*a)  # noqa: E731  the C++ checks
    public = lambda *a: blur_step(*a, backend="cpp")  # noqa: E731  the Python checks
    for fn in (raw, public):
        with pytest.raises(ValueError, match=r"weights\[1\] must be of shape \(T, n_1, n_2, k\) = \(3, 4, n_2, 2\)"):
            fn([weights[0], weights[1].repeat(1, 1, 1, 2)], x, code, *genes, *flags)  # k mismatch
        with pytest.raises(ValueError, match=r"weights\[1\] must be of shape"):
            fn([weights[0], weights[1][:, :3]], x, code, *genes, *flags)  # layer size mismatch
        with pytest.raises(ValueError, match=r"x must be of shape \(T, batch, D\) = \(3, batch, 6\)"):
            fn(weights, x[..., :5], code, *genes, *flags)
        with pytest.raises(ValueError, match=r"code must be of shape \(T, batch, C\) = \(3, 4, 3\)"):
            fn(weights, x, code[:, :2], *genes, *flags)
        with pytest.raises(ValueError, match=r"x must be of dtype"):
            fn(weights, x.double(), code, *genes, *flags)
        with pytest.raises(ValueError, match=r"weights\[0\] must be float32 or float64|weights\[0\] must be a "
                                             r"floating-point tensor"):
            fn([w.long() for w in weights], x, code, *genes, *flags)
        with pytest.raises(ValueError, match=r"eta must be of shape \(L,\) = \(2\) or \(L, T\) = \(2, 3\)"):
            fn(weights, x, code, genes[0], genes[1][:1], *genes[2:], *flags)
        with pytest.raises(ValueError, match=r"mu_hebb must be of shape \(L, k, k\) = \(2, 2, 2\)"):
            fn(weights, x, code, *genes[:7], genes[7][:, :1], *flags)
        with pytest.raises(ValueError, match="hidden_activation must be one of"):
            fn(weights, x, code, *genes, True, False, "relu", "tanh")
        with pytest.raises(ValueError, match=r"weights\[0\] must be of shape \(T, n_0, n_1, k\) with k >= 2"):
            fn([w[..., :1] for w in weights], x, code, *(v[..., :1, :1] if v.dim() > 1 else v for v in genes),
               *flags)


# ------------------------------------------------------------------------------------------------ nn.BLUR
def _quick_blur(fused, **kw) -> BLUR:
    torch.manual_seed(0)
    return BLUR([64, 20, 5], 2, per_layer_genome=True, learn_init_scale=True, fused=fused, **kw).double()


def test_blur_chooses_the_fused_step():
    w, x = [torch.zeros(2, 64, 20, 2), torch.zeros(2, 20, 5, 2)], torch.zeros(2, 3, 64)
    m = BLUR([64, 20, 5])
    p, per_copy = m._params(None)
    assert m._fused_genome(w, x, p, per_copy) is not None
    for kw in (dict(fused=False), dict(backend="reference")):
        m = BLUR([64, 20, 5], **kw)
        assert m._fused_genome(w, x, p, per_copy) is None
    with pytest.raises(ValueError, match="fused=True runs the cpp kernel"):
        BLUR([64, 20, 5], backend="reference", fused=True)
    m = BLUR([64, 20, 5], fused=True)
    with pytest.raises(RuntimeError, match="fused=True cannot run here"):
        m._fused_genome([v.half() for v in w], x.half(), {n: v.half() for n, v in p.items()}, per_copy)


@pytest.mark.parametrize("per_copy", [False, True], ids=["shared", "per_copy"])
def test_unroll_fused_equals_per_op(per_copy):
    """The quick config's shape (64 → 20 → 5, k = 2, T = 8, batch 16), U = 3, float64: logits, synapses and the
    meta-gradients of a query loss agree."""
    T, U, B = 8, 3, 16
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(T, U, B, 64, generator=g, dtype=torch.float64), torch.randint(5, (T, U, B), generator=g)
    qx, qy = torch.randn(T, 32, 64, generator=g, dtype=torch.float64), torch.randint(5, (T, 32), generator=g)
    results = []
    for fused in (True, False):
        m = _quick_blur(fused)
        theta = torch.nn.utils.parameters_to_vector(m.parameters()).detach()
        theta = (theta + 0.01 * torch.randn(T, theta.numel(), generator=torch.Generator().manual_seed(1),
                                             dtype=torch.float64)).requires_grad_(True)
        params = theta if per_copy else None
        gens = [torch.Generator().manual_seed(i) for i in range(T)]
        w, logits = m.unroll(m.initial_state(T, gens, params), x, y, params)
        loss = F.cross_entropy(m.predict(qx, w, params).transpose(1, 2), qy) + logits.square().mean()
        wrt = [theta] if per_copy else list(m.parameters())
        results.append((logits, w, torch.autograd.grad(loss, wrt)))
    (lf, wf, gf), (lp, wp, gp) = results
    torch.testing.assert_close(lf, lp, rtol=1e-11, atol=1e-11)
    for a, b in zip(wf, wp):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    for a, b in zip(gf, gp):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_backprop_genome_is_sgd_through_the_fused_step():
    """As tests/nn/test_blur.py: with the backprop genome BLUR is SGD on a deep linear network, here fused."""
    sizes, lr = [6, 5, 4, 3], 2**-5
    m = BLUR.backprop(sizes, lr, fused=True).double()
    x, y = _batches(T=2, S=3, B=4, D=sizes[0], C=sizes[-1], dtype=torch.float64)
    w0 = m.initial_state(2, torch.Generator().manual_seed(3))
    new, _ = m.unroll(w0, x, y)
    ref = _sgd_linear_net([w[..., 0] for w in w0], x, F.one_hot(y, sizes[-1]).double(), lr)
    for w, r in zip(new, ref):
        torch.testing.assert_close(w[..., 0], r, rtol=0, atol=1e-12)
        torch.testing.assert_close(w[..., 1], r, rtol=0, atol=1e-12)


def test_learning_step_fused_equals_per_op():
    x, y = _batches(T=2, S=1, B=5, D=64, C=5, dtype=torch.float64)
    out = []
    for fused in (True, False):
        m = _quick_blur(fused, oja=True, label_encoding="pm1")
        w = m.initial_state(2, torch.Generator().manual_seed(2))
        out.append(m.learning_step(w, m._standardize(x[:, 0]), m._label_code(y[:, 0], x)))
    for a, b in zip([*out[0][0], out[0][1]], [*out[1][0], out[1][1]]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_torch_compile_fullgraph_unroll():
    m = _quick_blur(True).float()
    T, U, B = 2, 2, 4
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(T, U, B, 64, generator=g), torch.randint(5, (T, U, B), generator=g)
    w0 = m.initial_state(T, torch.Generator().manual_seed(1))

    def loss(w0):
        w, logits = m.unroll(w0, x, y)
        return sum((v ** 2).sum() for v in w) + logits.sum()

    w0 = [w.detach().requires_grad_(True) for w in w0]
    got = torch.compile(loss, fullgraph=True)(w0)
    g_got = torch.autograd.grad(got, w0)
    want = loss(w0)
    g_want = torch.autograd.grad(want, w0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
