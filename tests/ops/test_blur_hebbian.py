"""blur_hebbian on every backend the machine has, against the reference (ARCHITECTURE.md: three bars), and
torch.compile(fullgraph=True) of one BLUR learning step made of blur_propagate and blur_hebbian.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.blur_hebbian import blur_hebbian, blur_hebbian_reference
from metalearn_ext.ops.blur_propagate import blur_propagate
from metalearn_ext.ops.blur_propagate.inputs import hebbian_inputs
from metalearn_ext.ops.testing import outputs_and_grads
from tests.ops.conftest import assert_close_fp32, assert_compiles_fullgraph, float64_truth, nan_filled_allocations

OP = "blur_hebbian"
NAMES = ["weight", "pre", "post", "pre_mix", "post_mix", "decay", "lr"]

SHAPES = [  # (T, B, I, J, k)
    (1, 1, 1, 1, 1),
    (2, 3, 5, 7, 3),
    (3, 8, 17, 10, 2),
    (1, 4, 9, 5, 8),
    (2, 5, 19, 33, 4),
    (1, 2, 3, 2, 5),
    (2, 2, 4, 3, 17),
]


def _cpp():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def check_against_reference(backend, inputs, normalize, oja, scalars=False):
    """Output and the gradient of every tensor input against float64; scalars: decay and lr as floats."""
    g = torch.Generator().manual_seed(1)
    upstream = [torch.randn(inputs[0].shape, generator=g).to(inputs[0].device)]
    before = [x.clone() for x in inputs]
    tensors = inputs[:5] if scalars else inputs
    decay, lr = (inputs[5][0].item(), inputs[6][0].item()) if scalars else (None, None)

    def kernel(*x):
        args = (*x, decay, lr) if scalars else x
        return [blur_hebbian(*args, normalize=normalize, oja=oja, backend=backend)]

    def reference(*x):
        if scalars:
            T = x[0].shape[0]
            x = (*x, torch.full((T,), decay, dtype=x[0].dtype), torch.full((T,), lr, dtype=x[0].dtype))
        return [blur_hebbian_reference(*x, normalize=normalize, oja=oja)]

    with nan_filled_allocations():
        out, grads = outputs_and_grads(kernel, tensors, upstream)
    want_out, want_grads = float64_truth(reference, tensors, upstream)
    for name, got, want in zip(["out"] + [f"grad {n}" for n in NAMES], out + grads, want_out + want_grads):
        assert got.shape == want.shape
        assert torch.isfinite(got).all(), f"{name}: non-finite (unwritten?) elements"
        assert_close_fp32(got, want, name)
    for x, y in zip(inputs, before):
        assert torch.equal(x, y), "inputs were modified in place"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "nonorm"])
@pytest.mark.parametrize("oja", [False, True], ids=["hebb", "oja"])
@pytest.mark.parametrize("per_copy", [False, True], ids=["shared", "per_copy"])
def test_matches_reference(backend, device, shape, normalize, oja, per_copy):
    inputs = hebbian_inputs(*shape, per_copy=per_copy, device=device, seed=hash((shape, normalize, oja)) % 2**31)
    check_against_reference(backend, inputs, normalize, oja)


@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "nonorm"])
def test_scalar_decay_and_lr(backend, device, normalize):
    check_against_reference(backend, hebbian_inputs(2, 3, 6, 5, 2, device=device, seed=4), normalize, True,
                            scalars=True)


def test_non_contiguous_inputs(backend, device):
    T, B, I, J, k = 2, 3, 7, 6, 4
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    inputs = [r(T, J, I, k).transpose(1, 2) / I ** 0.5, r(T, I, B, k).transpose(1, 2), r(B, T, J, k).transpose(0, 1),
              r(k, k).t(), r(T, k, k).transpose(1, 2), (0.5 + r(2 * T).abs())[::2], (0.01 * r(T, 2))[:, 0]]
    assert not any(x.is_contiguous() for x in inputs)
    check_against_reference(backend, inputs, True, True)


def test_all_zero_column_stays_finite(backend, device):
    weight, pre, post, pre_mix, post_mix, decay, lr = hebbian_inputs(1, 2, 4, 3, 2, device=device)
    weight[0, :, 1] = 0
    post[0, :, 1] = 0
    out = blur_hebbian(weight, pre, post, pre_mix, post_mix, decay, lr, backend=backend)
    assert torch.isfinite(out).all() and (out[0, :, 1] == 0).all()


def test_gradcheck_float64_cpp():
    _cpp()
    for normalize, oja, per_copy in [(True, False, False), (True, True, True), (False, True, False)]:
        inputs = [x.requires_grad_(True) for x in hebbian_inputs(2, 3, 4, 3, 2, per_copy=per_copy, dtype=torch.float64)]
        assert torch.autograd.gradcheck(
            lambda *x: blur_hebbian(*x, normalize=normalize, oja=oja, backend="cpp"), inputs)


def test_gradcheck_float64_reference():
    inputs = [x.requires_grad_(True) for x in hebbian_inputs(1, 2, 3, 2, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *x: blur_hebbian(*x, oja=True, backend="reference"), inputs)


def test_cpp_float64_matches_reference_tightly():
    _cpp()
    inputs = hebbian_inputs(2, 9, 33, 21, 3, per_copy=True, dtype=torch.float64)
    for normalize, oja in [(True, True), (False, False)]:
        torch.testing.assert_close(blur_hebbian(*inputs, normalize=normalize, oja=oja, backend="cpp"),
                                   blur_hebbian_reference(*inputs, normalize, oja), rtol=1e-12, atol=1e-12)


def test_opcheck_cpp():
    _cpp()
    for normalize, oja, per_copy in [(True, False, False), (False, True, True)]:
        inputs = [x.requires_grad_(True) for x in hebbian_inputs(2, 3, 4, 5, 2, per_copy=per_copy)]
        torch.library.opcheck(torch.ops.metalearn_ext.blur_hebbian.default, (*inputs, normalize, oja))


def learning_step(a0, weight, nu, mu, pre_mix, post_mix, decay, lr, backend):
    """One BLUR step of a one-layer network (specs/blur.md §2): forward, label into state 1, backward, update."""
    out = torch.tanh(blur_propagate(a0, weight, nu, backend=backend))
    label = torch.zeros_like(out)
    label[..., 1] = 1.0
    post = out * out.new_tensor([1.0, 0.0]) + label
    pre = a0 + torch.relu(torch.tanh(blur_propagate(post, weight, mu, transpose=True, backend=backend)))
    weight = blur_hebbian(weight, pre, post, pre_mix, post_mix, decay, lr, oja=True, backend=backend)
    return (blur_propagate(a0, weight, nu, backend=backend)[..., 0] ** 2).sum()


@pytest.mark.slow
def test_torch_compile_fullgraph_learning_step(backend, device):
    from metalearn_ext.ops.blur_propagate.inputs import propagate_inputs

    a0, weight, nu = propagate_inputs(2, 4, 6, 3, 2, device=device, seed=2)
    _, _, _, pre_mix, post_mix, decay, lr = hebbian_inputs(2, 4, 6, 3, 2, device=device, seed=3)
    mu = nu.flip(0)
    inputs = [x.requires_grad_(True) for x in (weight, nu, mu, pre_mix, post_mix, decay, lr)]
    assert_compiles_fullgraph(lambda *x: learning_step(a0, *x, backend=backend), inputs,
                              lambda *x: learning_step(a0, *x, backend="reference"), grad_rtol=1e-4)


@pytest.mark.parametrize("shape", [(3, 8, 64, 30, 2), (1, 16, 64, 40, 2)], ids=lambda s: "x".join(map(str, s)))
def test_cpp_split_over_two_threads(shape):
    """Large enough that at::parallel_for splits the work: rows, or (normalized) column panels of one copy."""
    _cpp()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for normalize in (True, False):
            check_against_reference("cpp", hebbian_inputs(*shape, seed=6), normalize, True)
    finally:
        torch.set_num_threads(threads)


def test_double_backward_runs_through_the_reference(monkeypatch):
    """A MAML-style second derivative of a cpp op: correct (via the reference), after one warning."""
    _cpp()
    from metalearn_ext.ops import autograd as op_autograd

    monkeypatch.setattr(op_autograd, "_warned_double_backward", set())
    inputs = hebbian_inputs(2, 3, 4, 3, 2, per_copy=True, dtype=torch.float64, seed=9)

    def second_order(backend):
        leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
        out = blur_hebbian(*leaves, oja=True, backend=backend)
        grads = torch.autograd.grad((out.sin() * out).sum(), leaves, create_graph=True)
        return list(grads) + list(torch.autograd.grad(sum((g * g).sum() for g in grads), leaves))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = second_order("cpp")
    for a, e in zip(got, second_order("reference")):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    assert sum("double backward" in str(w.message) for w in caught) == 1
