"""vsml_step on every backend the machine has, against the reference (ARCHITECTURE.md: three bars).

The harness (backend fixture, NaN-filled allocations, float64 truth, tolerances) is tests/ops/conftest.py.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops import autograd as op_autograd
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.testing import outputs_and_grads
from metalearn_ext.ops.vsml_step import vsml_step, vsml_step_reference
from metalearn_ext.ops.vsml_step.inputs import make_inputs
from tests.ops.conftest import (
    assert_close_fp32,
    assert_compiles_fullgraph,
    device_for,
    float64_truth,
    nan_filled_allocations,
)

OP = "vsml_step"


def truth(inputs, ticks, upstream):
    return float64_truth(lambda *a: vsml_step_reference(*a, ticks=ticks), inputs, upstream)


def upstream_for(T, A, B, N, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device) for s in [(T, A, B, N), (T, A, B, N), (T, B, N), (T, A, N)]]


SHAPES = [  # (T, A, B, N, M)
    (2, 5, 3, 16, 8),
    (1, 1, 1, 8, 1),
    (3, 7, 5, 8, 3),
    (2, 1, 11, 32, 4),
    (1, 13, 1, 16, 2),
    (1, 5, 12, 32, 4),  # several tiles along a and b in the fused kernels
    (1, 4, 17, 8, 2),
]


def check_against_reference(backend, device, shape, ticks, per_copy):
    """Outputs and every gradient against the float64 reference, with NaN-filled allocations."""
    inputs = make_inputs(*shape, per_copy=per_copy, device=device, seed=hash((shape, ticks, per_copy)) % 2**31)
    upstream = upstream_for(*shape[:4], device)
    before = [x.clone() for x in inputs]
    with nan_filled_allocations():
        out, grads = outputs_and_grads(lambda *a: vsml_step(*a, ticks=ticks, backend=backend), inputs, upstream)
    want_out, want_grads = truth(inputs, ticks, upstream)
    for name, a, e in zip(["h", "c", "fwd_mean", "bwd_mean"], out, want_out):
        assert a.shape == e.shape and a.dtype == torch.float32
        assert torch.isfinite(a).all(), f"{name}: non-finite (unwritten?) elements"
        assert_close_fp32(a, e, name)
    for name, a, e in zip(["h", "c", "fwd_in", "bwd_in", "weight", "bias"], grads, want_grads):
        assert torch.isfinite(a).all(), f"grad {name}: non-finite elements"
        assert_close_fp32(a, e, f"grad {name}")
    for x, y in zip(inputs, before):
        assert torch.equal(x, y), "inputs were modified in place"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ticks", [1, 2, 3])
@pytest.mark.parametrize("per_copy", [False, True], ids=["shared", "per_copy"])
def test_matches_reference(backend, device, shape, ticks, per_copy):
    check_against_reference(backend, device, shape, ticks, per_copy)


# The C++ kernel's float32 fast paths exist for N in {4, 8, 12, 16, 24, 32}; SHAPES covers 8/16/32 on
# every backend, these the other three (cpp only: the fused CUDA/Triton kernels take 8/16/32). B = 7 and
# 2 run the lockstep groups of 4, 2 and 1 synapses; A = 1 and T > 1 the row split.
@pytest.mark.parametrize("N", [4, 12, 24])
@pytest.mark.parametrize("tabm", [(2, 3, 7, 3), (1, 1, 2, 1), (3, 5, 5, 2)], ids=lambda s: "T{}A{}B{}M{}".format(*s))
@pytest.mark.parametrize("ticks", [1, 3])
@pytest.mark.parametrize("per_copy", [False, True], ids=["shared", "per_copy"])
def test_cpp_fp32_fast_paths_for_other_n(N, tabm, ticks, per_copy):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    T, A, B, M = tabm
    check_against_reference("cpp", "cpu", (T, A, B, N, M), ticks, per_copy)


def test_non_contiguous_inputs(backend, device):
    T, A, B, N, M = 2, 6, 5, 16, 3
    dev = device
    g = torch.Generator().manual_seed(3)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(dev)  # noqa: E731
    h = r(T, B, A, N, scale=0.5).transpose(1, 2)
    c = r(T, A, N, B).permute(0, 1, 3, 2)
    fwd_in = r(T, M, A).transpose(1, 2)
    bwd_in = r(T, B, 2 * M)[..., ::2]
    weight = r(2 * M + N, 4 * N, scale=0.2).t()
    bias = r(8 * N, scale=0.5)[::2]
    inputs = [h, c, fwd_in, bwd_in, weight, bias]
    assert not any(x.is_contiguous() for x in inputs)
    upstream = [torch.randn(s, generator=g).to(dev) for s in [(T, A, B, N), (T, A, B, N), (T, B, N), (T, A, N)]]
    out, grads = outputs_and_grads(lambda *a: vsml_step(*a, ticks=2, backend=backend), inputs, upstream)
    want_out, want_grads = truth(inputs, 2, upstream)
    for a, e in zip(list(out) + list(grads), list(want_out) + list(want_grads)):
        assert_close_fp32(a, e, "non-contiguous")


def test_only_some_outputs_used(backend, device):
    """Outputs that get no gradient must count as zero in the backward."""
    inputs = make_inputs(1, 3, 4, 8, 2, device=device, seed=5)
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    ref_leaves = [x.detach().clone().requires_grad_() for x in inputs]
    vsml_step(*leaves, ticks=2, backend=backend)[2].sum().backward()
    vsml_step_reference(*ref_leaves, ticks=2)[2].sum().backward()
    for x, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(x.grad, r.grad, rtol=1e-5, atol=1e-5)


def test_error_no_worse_than_fp32_reference(backend, device):
    """Over larger sums (the weight gradient adds A·B·ticks terms) a fixed tolerance says little: both fp32
    implementations are measured against float64 instead."""
    dev = device
    inputs = make_inputs(1, 24, 20, 16, 4, device=dev, seed=8)
    g = torch.Generator().manual_seed(9)
    upstream = [torch.randn(s, generator=g).to(dev) for s in [(1, 24, 20, 16)] * 2 + [(1, 20, 16), (1, 24, 16)]]
    exact = truth(inputs, 2, upstream)
    ref32 = outputs_and_grads(lambda *a: vsml_step_reference(*a, ticks=2), inputs, upstream)
    kernel = outputs_and_grads(lambda *a: vsml_step(*a, ticks=2, backend=backend), inputs, upstream)
    for e, r, k in zip([*exact[0], *exact[1]], [*ref32[0], *ref32[1]], [*kernel[0], *kernel[1]]):
        ref_err = (r.double().cpu() - e).abs().max().item()
        kernel_err = (k.double().cpu() - e).abs().max().item()
        assert kernel_err <= 4 * ref_err + 1e-6 * (1 + e.abs().max().item())


def test_nan_input_propagates(backend, device):
    inputs = make_inputs(1, 3, 2, 8, 2, device=device)
    inputs[0][0, 1, 0, 0] = float("nan")
    h, c, fm, bm = vsml_step(*inputs, ticks=1, backend=backend)
    assert torch.isnan(h[0, 1, 0]).any() and torch.isfinite(h[0, 0]).all()


def test_gradcheck_float64_cpp():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    for per_copy, ticks in [(False, 2), (True, 3)]:
        inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 2, 8, 2, per_copy=per_copy, dtype=torch.float64)]
        assert torch.autograd.gradcheck(lambda *a: vsml_step(*a, ticks=ticks, backend="cpp"), inputs)


def test_gradcheck_float64_reference():
    inputs = [x.requires_grad_(True) for x in make_inputs(1, 2, 3, 4, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: vsml_step(*a, ticks=2, backend="reference"), inputs)


def test_cpp_float64_matches_reference_tightly():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    inputs = make_inputs(3, 5, 4, 12, 3, per_copy=True, dtype=torch.float64)  # N = 12: the generic-N path
    for a, e in zip(vsml_step(*inputs, ticks=3, backend="cpp"), vsml_step_reference(*inputs, ticks=3)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_opcheck_cpp():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    for per_copy in (False, True):
        inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 4, 8, 2, per_copy=per_copy)]
        torch.library.opcheck(torch.ops.metalearn_ext.vsml_step.default, (*inputs, 2))


@pytest.mark.slow
def test_torch_compile_fullgraph(backend, device):
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 4, 3, 8, 2, device=device)]

    def f(h, c, fwd_in, bwd_in, weight, bias):
        h, c, fm, bm = vsml_step(h, c, fwd_in, bwd_in, weight, bias, ticks=2, backend=backend)
        return (h.sum(-1) ** 2).sum() + fm.tanh().sum() + bm.sum() + c.mean()

    assert_compiles_fullgraph(f, inputs)


def test_backend_selection_and_reporting():
    report = metalearn_ext.backends()
    assert set(report) == {"reference", "cpp", "cuda", "triton"}
    assert report["reference"].available
    for name in os.environ.get("METALEARN_REQUIRE_BACKENDS", "").split(","):
        if name:
            assert report[name].available, f"{name} required here but unavailable: {report[name].reason}"
    inputs = make_inputs(1, 2, 2, 8, 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        vsml_step(*inputs, backend="fastest")
    if not report["cuda"].available:
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available: .+"):
            vsml_step(*inputs, backend="cuda")
    if report["cpp"].available:
        assert choose_backend(OP, None, *inputs, 1) == "cpp"
        with pytest.raises(RuntimeError, match="backend 'cpp' cannot run here: the cpp backend takes float32 or "
                                               "float64, got torch.float16"):
            vsml_step(*[x.half() for x in inputs], backend="cpp")
        with pytest.raises(RuntimeError, match="backend 'cpp' cannot run here: the cpp backend runs on CPU"):
            choose_backend(OP, "cpp", *[x.to("meta") for x in inputs], 1)
    assert choose_backend(OP, None, *[x.half() for x in inputs], 1) == "reference"


def test_metalearn_backend_sets_the_default(monkeypatch):
    inputs = make_inputs(1, 2, 2, 8, 2)
    monkeypatch.setenv("METALEARN_BACKEND", "reference")
    assert choose_backend(OP, None, *inputs, 1) == "reference"
    monkeypatch.setenv("METALEARN_BACKEND", "fastest")
    with pytest.raises(ValueError, match="backend must be one of"):
        vsml_step(*inputs)


def test_fused_backend_falls_back_for_unsupported_n():
    report = metalearn_ext.backends()
    name = next((b for b in ("cuda", "triton") if report[b].available), None)
    if name is None:
        pytest.skip("no fused cuda/triton backend usable here")
    inputs = make_inputs(1, 2, 3, 12, 2, device=device_for(name))
    fallback = "cpp" if inputs[0].is_cpu and report["cpp"].available else "reference"
    with pytest.warns(UserWarning, match=f"the {name} backend supports N in .*, got N=12; falling back to {fallback}"):
        out = vsml_step(*inputs, ticks=2, backend=name)
    torch.testing.assert_close(out[0], vsml_step_reference(*inputs, ticks=2)[0], rtol=1e-5, atol=1e-5)


def second_order_grads(fn, inputs):
    """d/dx of |d loss/dx|², loss nonlinear in every output: what a MAML outer loop differentiates."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    loss = sum((o.sin() * o).sum() for o in fn(*leaves))
    grads = torch.autograd.grad(loss, leaves, create_graph=True)
    return list(grads), list(torch.autograd.grad(sum((g * g).sum() for g in grads), leaves))


def test_double_backward_runs_through_the_reference_with_one_warning(monkeypatch):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    monkeypatch.setattr(op_autograd, "_warned_double_backward", set())
    inputs = make_inputs(2, 3, 4, 8, 2, per_copy=True, dtype=torch.float64, seed=11)
    with warnings.catch_warnings():  # a plain backward is the kernel's own: no warning
        warnings.filterwarnings("error", message=".*double backward")
        outputs_and_grads(lambda *a: vsml_step(*a, ticks=2, backend="cpp"), inputs, upstream_for(2, 3, 4, 8, "cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = second_order_grads(lambda *a: vsml_step(*a, ticks=2, backend="cpp"), inputs)
        second_order_grads(lambda *a: vsml_step(*a, ticks=2, backend="cpp"), inputs)
    want = second_order_grads(lambda *a: vsml_step_reference(*a, ticks=2), inputs)
    for a, e in zip([*got[0], *got[1]], [*want[0], *want[1]]):
        assert e.abs().max() > 0
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    messages = [str(w.message) for w in caught if "double backward" in str(w.message)]
    assert len(messages) == 1, messages
    assert "metalearn_ext::vsml_step" in messages[0] and "reference" in messages[0]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backward_memory_does_not_grow_with_ticks():
    if not metalearn_ext.backends()["cuda"].available:
        pytest.skip(metalearn_ext.backends()["cuda"].reason)
    peaks = []
    for ticks in (1, 8):
        inputs = [x.requires_grad_(True) for x in make_inputs(8, 256, 32, 16, 8, device="cuda")]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        h, c, fm, bm = vsml_step(*inputs, ticks=ticks, backend="cuda")
        (h.sum() + c.sum() + fm.sum() + bm.sum()).backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] <= 1.1 * peaks[0], f"peak memory grew with ticks: {peaks}"
