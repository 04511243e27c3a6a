"""The C++ autograd of content_read and mann_memory_step (csrc/memory_autograd.cpp): gradients against the
reference in float64, with beta given and None and with zero memory rows and keys; the double backward's
fallback through the reference (its one warning); opcheck; and no Python autograd left on the forward ops."""
from __future__ import annotations

import warnings

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops import autograd as ops_autograd
from metalearn_ext.ops.content_read import content_read, content_read_reference
from metalearn_ext.ops.content_read.inputs import make_inputs as read_inputs
from metalearn_ext.ops.content_read.inputs import make_upstream as read_upstream
from metalearn_ext.ops.mann_memory_step import mann_memory_step, mann_memory_step_reference
from metalearn_ext.ops.mann_memory_step.inputs import make_inputs as step_inputs
from metalearn_ext.ops.mann_memory_step.inputs import make_upstream as step_upstream
from metalearn_ext.ops.testing import outputs_and_grads

GAMMA = 0.95
F64 = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(autouse=True)
def cpp_available():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _read_cpp(*a):
    return content_read(*a, backend="cpp")


def _step_cpp(*a):
    return mann_memory_step(*a, gamma=GAMMA, backend="cpp")


def _step_ref(*a):
    return mann_memory_step_reference(*a, gamma=GAMMA)


def _read_inputs(with_beta: bool, zero: bool, device: str, dtype=torch.float64, seed=11) -> list:
    inputs = read_inputs(3, 4, 13, 7, with_beta=with_beta, dtype=dtype, device=device, seed=seed)
    if zero:
        inputs[0][0, 2] = 0  # a zero memory row and a zero key: cosine 0, finite gradients
        inputs[1][1, 3] = 0
    return inputs if with_beta else [*inputs, None]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("zero", [False, True], ids=["dense", "zero_rows"])
@pytest.mark.parametrize("with_beta", [False, True], ids=["beta_none", "beta"])
def test_content_read_gradients_match_reference(device, with_beta, zero):
    if device == "cuda":
        dtype = torch.float32
        tol = dict(rtol=1e-4, atol=1e-5)
    else:
        dtype, tol = torch.float64, F64
    *tensors, beta = _read_inputs(with_beta, zero, device, dtype)
    if beta is not None:
        tensors.append(beta)
    upstream = read_upstream(3, 4, 13, 7, dtype=dtype, device=device)
    call = (lambda m, k, b=None: _read_cpp(m, k, b))
    ref = (lambda m, k, b=None: content_read_reference(m, k, b))
    got = outputs_and_grads(call, tensors, upstream)
    want = outputs_and_grads(ref, [t.double() for t in tensors], [u.double() for u in upstream])
    for a, e in zip([*got[0], *got[1]], [*want[0], *want[1]]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), e, **tol)


def test_forward_ops_have_a_cpp_autograd_node():
    m, k, b = [x.requires_grad_(True) for x in read_inputs(2, 3, 6, 5)]
    weights, reads = torch.ops.metalearn_ext.content_read(m, k, b)
    assert weights.grad_fn is reads.grad_fn
    assert weights.grad_fn.name().startswith("torch::autograd::CppNode") and "ContentReadFunction" in weights.grad_fn.name()
    out = torch.ops.metalearn_ext.mann_memory_step(*[x.requires_grad_(True) for x in step_inputs(2, 2, 6, 5)], GAMMA)
    assert all(o.grad_fn is out[0].grad_fn for o in out) and "CppNode<(anonymous namespace)::MannMemoryStepFunction>" in out[0].grad_fn.name()
    # The Python autograd (torch.library.register_autograd) is not registered for the forward ops.
    from torch._library.custom_ops import _maybe_get_opdef  # noqa: PLC0415  (private, test only)
    for op in ("content_read", "mann_memory_step"):
        opdef = _maybe_get_opdef(f"metalearn_ext::{op}")
        assert opdef is None or opdef._backward_fn is None


@pytest.mark.parametrize("with_beta", [False, True], ids=["beta_none", "beta"])
def test_content_read_gradcheck_and_gradgradcheck(with_beta):
    inputs = [x.requires_grad_(True) for x in read_inputs(2, 2, 5, 4, with_beta=with_beta, dtype=torch.float64)]
    call = (lambda m, k, b=None: _read_cpp(m, k, b))
    assert torch.autograd.gradcheck(call, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert torch.autograd.gradgradcheck(call, inputs)


def test_mann_memory_step_gradcheck_and_gradgradcheck():
    inputs = [x.requires_grad_(True) for x in step_inputs(2, 2, 6, 4, dtype=torch.float64, seed=3)]
    assert torch.autograd.gradcheck(_step_cpp, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert torch.autograd.gradgradcheck(_step_cpp, inputs)


def _second_order(fn, inputs, used=None):
    leaves = [x.detach().clone().requires_grad_(True) if x is not None else None for x in inputs]
    tensors = [x for x in leaves if x is not None]
    out = fn(*leaves)
    used = range(len(out)) if used is None else used
    loss = sum((out[i].sin() * out[i]).sum() for i in used)
    grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True, materialize_grads=True)
    return torch.autograd.grad(sum((g * g).sum() for g in grads if g.requires_grad), tensors, allow_unused=True,
                               materialize_grads=True)


def _assert_close_scaled(got, want):
    """float64 agreement relative to each tensor's largest entry: at a zero key the second derivatives are
    ~1/eps, and an entry the reference gets as an exact 0 the kernel gets as a rounding residue."""
    for a, e in zip(got, want):
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10 * scale)


@pytest.mark.parametrize("used", [None, [0], [1]], ids=["both", "weights_only", "reads_only"])
@pytest.mark.parametrize("zero", [False, True], ids=["dense", "zero_rows"])
@pytest.mark.parametrize("with_beta", [False, True], ids=["beta_none", "beta"])
def test_content_read_double_backward_matches_reference(with_beta, zero, used):
    inputs = _read_inputs(with_beta, zero, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = _second_order(_read_cpp, inputs, used)
    _assert_close_scaled(got, _second_order(content_read_reference, inputs, used))


@pytest.mark.parametrize("used", [None, [2], [0, 4]], ids=["all", "reads_only", "memory_and_write_weights"])
def test_mann_memory_step_double_backward_matches_reference(used):
    inputs = step_inputs(2, 3, 7, 5, dtype=torch.float64, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = _second_order(_step_cpp, inputs, used)
    _assert_close_scaled(got, _second_order(_step_ref, inputs, used))


@pytest.mark.parametrize("op", ["content_read", "mann_memory_step"])
def test_double_backward_warns_once(op, monkeypatch):
    monkeypatch.setattr(ops_autograd, "_warned_double_backward", set())
    if op == "content_read":
        fn, inputs = _read_cpp, read_inputs(2, 2, 5, 4, dtype=torch.float64)
    else:
        fn, inputs = _step_cpp, step_inputs(2, 2, 5, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match=f"metalearn_ext::{op}: its backward kernel is not differentiable"):
        _second_order(fn, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _second_order(fn, inputs)  # once per op and process
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
        torch.autograd.grad(sum(o.sum() for o in fn(*leaves)), leaves)  # first order: no warning at all


def test_opcheck_backward_ops():
    m, k, b = read_inputs(2, 3, 6, 5)
    gw, gr = read_upstream(2, 3, 6, 5)
    for beta in (b, None):
        torch.library.opcheck(torch.ops.metalearn_ext.content_read_backward.default, (gw, gr, m, k, beta),
                              test_utils=("test_schema", "test_faketensor"))
    inputs = step_inputs(2, 2, 6, 5)
    upstream = step_upstream(2, 2, 6, 5)
    torch.library.opcheck(torch.ops.metalearn_ext.mann_memory_step_backward.default, (*upstream, *inputs, GAMMA),
                          test_utils=("test_schema", "test_faketensor"))
    for with_beta in (False, True):  # the forward ops, with inputs that need gradients (autograd registration)
        memory, keys, *beta = [x.requires_grad_(True) for x in read_inputs(2, 3, 6, 5, with_beta=with_beta)]
        torch.library.opcheck(torch.ops.metalearn_ext.content_read.default, (memory, keys, beta[0] if beta else None))
    torch.library.opcheck(torch.ops.metalearn_ext.mann_memory_step.default,
                          (*[x.requires_grad_(True) for x in step_inputs(2, 2, 6, 5)], GAMMA))
