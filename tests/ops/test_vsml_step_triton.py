"""The Triton backend of vsml_step against reference.py: forward, all six gradients, odd sizes.

Runs on a CUDA GPU when there is one, else on CPU under the Triton interpreter
(TRITON_INTERPRET=1, set here before anything imports triton). Shapes stay tiny so the
interpreter finishes the module in well under a minute.
"""
import os
import shutil

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from metalearn_ext.ops.vsml_step import triton as vt  # noqa: E402
from metalearn_ext.ops.vsml_step.reference import vsml_step_reference  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_OK, _WHY = vt.supports(DEVICE)
pytestmark = pytest.mark.skipif(not _OK, reason=f"Triton cannot run on {DEVICE}: {_WHY}")

# fp32 against the fp32 reference. The kernel sums in another order (tile partial sums and
# atomics for the means and the parameter gradients) and computes tanh as 2·sigmoid(2x)−1,
# so agreement is to a few ulps of the largest terms, well inside 1e-5.
RTOL, ATOL = 1e-5, 1e-5


def _inputs(T, A, B, N, M, shared_w, shared_b, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE)

    w_shape = (4 * N, 2 * M + N) if shared_w else (T, 4 * N, 2 * M + N)
    b_shape = (4 * N,) if shared_b else (T, 4 * N)
    return [r(T, A, B, N), r(T, A, B, N), r(T, A, M), r(T, B, M), r(*w_shape, scale=0.4), r(*b_shape, scale=0.4)]


def _run(fn, inputs, ticks, upstream):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    outs = fn(*leaves, ticks)
    torch.autograd.backward(outs, upstream)
    return [o.detach() for o in outs], [x.grad for x in leaves]


def _check(inputs, ticks, seed=1):
    with torch.no_grad():
        shapes = [o.shape for o in vsml_step_reference(*inputs, ticks)]
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(s, generator=g).to(DEVICE) for s in shapes]
    ref_outs, ref_grads = _run(vsml_step_reference, inputs, ticks, upstream)
    outs, grads = _run(vt.vsml_step_triton, inputs, ticks, upstream)
    for name, o, r in zip(("h", "c", "fwd_mean", "bwd_mean"), outs, ref_outs):
        assert o.shape == r.shape and o.dtype == torch.float32, name
        torch.testing.assert_close(o, r, rtol=RTOL, atol=ATOL, msg=lambda m: f"output {name}: {m}")
    for name, gr, r in zip(("h", "c", "fwd_in", "bwd_in", "weight", "bias"), grads, ref_grads):
        assert gr is not None and gr.shape == r.shape, name
        torch.testing.assert_close(gr, r, rtol=RTOL, atol=ATOL, msg=lambda m: f"grad {name}: {m}")


CASES = [
    # T, A, B, N, M, ticks, shared weight, shared bias
    (2, 3, 5, 8, 3, 2, True, True),
    (3, 7, 5, 16, 3, 1, False, False),  # primes
    (1, 1, 1, 8, 1, 3, True, True),  # every size 1
    (2, 1, 9, 16, 2, 2, False, True),  # A = 1
    (2, 6, 1, 32, 2, 1, True, False),  # B = 1
    (1, 5, 12, 32, 4, 3, False, False),  # BLOCK_B = 4 < B: several b-tiles and a-tiles
    (1, 4, 17, 8, 2, 2, False, False),  # B prime > tile: one column per tile
]


@pytest.mark.parametrize("T,A,B,N,M,ticks,shared_w,shared_b", CASES)
def test_matches_reference(T, A, B, N, M, ticks, shared_w, shared_b):
    _check(_inputs(T, A, B, N, M, shared_w, shared_b), ticks)


def test_non_contiguous_inputs_and_inputs_untouched():
    T, A, B, N, M = 2, 3, 5, 16, 3
    h, c, fwd_in, bwd_in, w, b = _inputs(T, A, B, N, M, False, False, seed=3)
    # Same values, other strides: transposed storage, a sliced weight, an expanded bias.
    h_nc = h.transpose(1, 2).contiguous().transpose(1, 2)
    c_nc = c.permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)
    fwd_nc = fwd_in.transpose(0, 1).contiguous().transpose(0, 1)
    bwd_nc = torch.cat([bwd_in, bwd_in], dim=-1)[..., :M]
    w_nc = w.transpose(1, 2).contiguous().transpose(1, 2)
    b_nc = b[:1].expand(T, 4 * N)
    inputs = [h_nc, c_nc, fwd_nc, bwd_nc, w_nc, b_nc]
    assert not any(x.is_contiguous() for x in inputs)
    before = [x.clone() for x in inputs]
    _check(inputs, ticks=2)
    for x, y in zip(inputs, before):
        assert torch.equal(x, y)


def test_every_output_element_written():
    # With deterministic algorithms and fill_uninitialized_memory, torch.empty* returns NaN:
    # any element of an output or a gradient that the kernels failed to write stays NaN.
    det, fill = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        assert torch.empty(3, device=DEVICE).isnan().all()
        inputs = _inputs(2, 5, 3, 8, 2, True, True, seed=4)
        outs, grads = _run(vt.vsml_step_triton, inputs, 2, [torch.ones_like(o) for o in vsml_step_reference(*inputs, 2)])
    finally:
        torch.use_deterministic_algorithms(det)
        torch.utils.deterministic.fill_uninitialized_memory = fill
    for t in [*outs, *grads]:
        assert torch.isfinite(t).all()
    _check(inputs, ticks=2)


def test_only_some_outputs_used():
    # Unused outputs get no gradient from autograd; the backward must treat them as zero.
    inputs = _inputs(1, 3, 4, 8, 2, True, True, seed=5)
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    ref_leaves = [x.detach().clone().requires_grad_() for x in inputs]
    vt.vsml_step_triton(*leaves, 2)[2].sum().backward()
    vsml_step_reference(*ref_leaves, 2)[2].sum().backward()
    for x, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(x.grad, r.grad, rtol=RTOL, atol=ATOL)


def test_rejects_bad_dtype_and_state_size():
    inputs = _inputs(1, 2, 2, 8, 2, True, True)
    with pytest.raises(ValueError, match="float64"):
        vt.vsml_step_triton(*[x.double() for x in inputs], 1)
    h, c, fwd_in, bwd_in, _, _ = _inputs(1, 2, 2, 12, 2, True, True)
    w, b = torch.zeros(48, 16, device=DEVICE), torch.zeros(48, device=DEVICE)
    with pytest.raises(ValueError, match="N=12"):
        vt.vsml_step_triton(h, c, fwd_in, bwd_in, w, b, 1)


def test_availability_reports():
    assert vt.available() == (True, "")
    assert vt.supports(DEVICE) == (True, "")
    ok, why = vt.supports(torch.device("meta"))
    assert not ok and "meta" in why


def test_opcheck():
    inputs = _inputs(1, 3, 2, 8, 2, False, True, seed=6)
    leaves = [x.clone().requires_grad_() for x in inputs]
    torch.library.opcheck(torch.ops.metalearn_ext.vsml_step_triton.default, (*leaves, 2))
    outs = vsml_step_reference(*inputs, 2)
    grads = [torch.randn_like(o) for o in outs]
    torch.library.opcheck(torch.ops.metalearn_ext.vsml_step_triton_backward.default, (*grads, *inputs, 2))


def test_torch_compile_fullgraph():
    inputs = _inputs(1, 3, 5, 16, 2, True, True, seed=7)

    def f(h, c, fwd_in, bwd_in, w, b):
        h2, c2, fm, bm = vt.vsml_step_triton(h, c, fwd_in, bwd_in, w, b, 2)
        return (h2 * c2).sum() + fm.square().sum() + bm.sum()

    if DEVICE.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile's inductor needs a C++ compiler for the CPU parts of the graph; none found")
    compiled = torch.compile(f, fullgraph=True)
    leaves = [x.clone().requires_grad_() for x in inputs]
    ref_leaves = [x.clone().requires_grad_() for x in inputs]
    loss = compiled(*leaves)
    loss.backward()
    h2, c2, fm, bm = vsml_step_reference(*ref_leaves, 2)
    ref = (h2 * c2).sum() + fm.square().sum() + bm.sum()
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=RTOL, atol=ATOL)
    for x, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(x.grad, r.grad, rtol=RTOL, atol=ATOL)


def test_error_against_float64_no_worse_than_float32_reference():
    # Over larger sums (the weight gradient adds A·B·ticks terms) a fixed tolerance says little:
    # measure both fp32 implementations against the float64 reference instead.
    inputs = _inputs(1, 24, 20, 16, 4, True, True, seed=8)
    g = torch.Generator().manual_seed(9)
    upstream = [torch.randn(o.shape, generator=g).to(DEVICE) for o in vsml_step_reference(*inputs, 2)]
    out64, grads64 = _run(vsml_step_reference, [x.double() for x in inputs], 2, [u.double() for u in upstream])
    out32, grads32 = _run(vsml_step_reference, inputs, 2, upstream)
    outk, gradsk = _run(vt.vsml_step_triton, inputs, 2, upstream)
    for exact, ref32, kernel in zip([*out64, *grads64], [*out32, *grads32], [*outk, *gradsk]):
        ref_err = (ref32.double() - exact).abs().max().item()
        kernel_err = (kernel.double() - exact).abs().max().item()
        assert kernel_err <= 4 * ref_err + 1e-6 * (1 + exact.abs().max().item())
