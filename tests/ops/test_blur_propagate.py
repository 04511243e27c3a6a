"""blur_propagate on every backend the machine has, against the reference (ARCHITECTURE.md: three bars).

The harness (backend fixture, NaN-filled allocations, float64 truth, tolerances) is tests/ops/conftest.py.
"""
from __future__ import annotations

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.blur_propagate import blur_propagate, blur_propagate_reference
from metalearn_ext.ops.blur_propagate.inputs import propagate_inputs
from metalearn_ext.ops.testing import outputs_and_grads
from tests.ops.conftest import assert_close_fp32, float64_truth, nan_filled_allocations

OP = "blur_propagate"

SHAPES = [  # (T, B, I, J, k): sizes 1, primes, k not dividing a vector, rows past a register tile
    (1, 1, 1, 1, 1),
    (2, 3, 5, 7, 3),
    (3, 8, 17, 10, 2),
    (1, 4, 9, 5, 8),
    (2, 5, 19, 33, 4),
    (1, 6, 64, 20, 2),
    (1, 2, 3, 2, 5),
    (2, 2, 4, 3, 17),
]


def _cpp():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def check_against_reference(backend, inputs, transpose):
    T, B, _, k = inputs[0].shape
    n = inputs[1].shape[1] if transpose else inputs[1].shape[2]
    g = torch.Generator().manual_seed(1)
    upstream = [torch.randn(T, B, n, k, generator=g).to(inputs[0].device)]
    before = [x.clone() for x in inputs]
    with nan_filled_allocations():
        out, grads = outputs_and_grads(lambda *x: [blur_propagate(*x, transpose=transpose, backend=backend)],
                                       inputs, upstream)
    want_out, want_grads = float64_truth(lambda *x: [blur_propagate_reference(*x, transpose)], inputs, upstream)
    assert out[0].shape == want_out[0].shape and out[0].dtype == torch.float32
    for name, got, want in zip(["out", "grad a", "grad weight", "grad mix"], out + grads, want_out + want_grads):
        assert torch.isfinite(got).all(), f"{name}: non-finite (unwritten?) elements"
        assert_close_fp32(got, want, name)
    for x, y in zip(inputs, before):
        assert torch.equal(x, y), "inputs were modified in place"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("transpose", [False, True], ids=["forward", "transpose"])
@pytest.mark.parametrize("per_copy", [False, True], ids=["shared", "per_copy"])
def test_matches_reference(backend, device, shape, transpose, per_copy):
    inputs = propagate_inputs(*shape, transpose=transpose, per_copy=per_copy, device=device,
                              seed=hash((shape, transpose, per_copy)) % 2**31)
    check_against_reference(backend, inputs, transpose)


@pytest.mark.parametrize("transpose", [False, True], ids=["forward", "transpose"])
def test_non_contiguous_inputs(backend, device, transpose):
    T, B, I, J, k = 2, 3, 7, 6, 4
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    n = J if transpose else I
    a = r(T, n, B, k).transpose(1, 2)
    weight = r(T, J, I, k).transpose(1, 2) / n ** 0.5
    mix = r(k, k).t()
    assert not any(x.is_contiguous() for x in (a, weight, mix))
    check_against_reference(backend, [a, weight, mix], transpose)


def test_gradcheck_float64_cpp():
    _cpp()
    for transpose in (False, True):
        for per_copy in (False, True):
            inputs = [x.requires_grad_(True) for x in
                      propagate_inputs(2, 3, 4, 5, 3, transpose=transpose, per_copy=per_copy, dtype=torch.float64)]
            assert torch.autograd.gradcheck(lambda *x: blur_propagate(*x, transpose=transpose, backend="cpp"), inputs)


def test_gradcheck_float64_reference():
    inputs = [x.requires_grad_(True) for x in propagate_inputs(1, 2, 3, 2, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *x: blur_propagate(*x, backend="reference"), inputs)


def test_cpp_float64_matches_reference_tightly():
    _cpp()
    for transpose in (False, True):
        inputs = propagate_inputs(2, 9, 33, 21, 3, transpose=transpose, per_copy=True, dtype=torch.float64)
        torch.testing.assert_close(blur_propagate(*inputs, transpose=transpose, backend="cpp"),
                                   blur_propagate_reference(*inputs, transpose), rtol=1e-12, atol=1e-12)


def test_opcheck_cpp():
    _cpp()
    for transpose in (False, True):
        for per_copy in (False, True):
            inputs = [x.requires_grad_(True) for x in
                      propagate_inputs(2, 3, 4, 5, 2, transpose=transpose, per_copy=per_copy)]
            torch.library.opcheck(torch.ops.metalearn_ext.blur_propagate.default, (*inputs, transpose))


def test_backend_default_is_cpp_and_large_k_falls_back():
    _cpp()
    from metalearn_ext.ops.choice import choose_backend

    inputs = propagate_inputs(1, 2, 3, 4, 2)
    assert choose_backend(OP, None, *inputs, False) == "cpp"
    big = propagate_inputs(1, 1, 2, 2, 65)
    with pytest.warns(UserWarning, match="supports k <= 64 states, got k=65; falling back to reference"):
        out = blur_propagate(*big, backend="cpp")
    torch.testing.assert_close(out, blur_propagate_reference(*big))


@pytest.mark.parametrize("shape", [(3, 8, 64, 30, 2), (1, 16, 64, 40, 2)], ids=lambda s: "x".join(map(str, s)))
def test_cpp_split_over_two_threads(shape):
    """Large enough that at::parallel_for splits the rows (several per copy, or one copy per thread)."""
    _cpp()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for transpose in (False, True):
            check_against_reference("cpp", propagate_inputs(*shape, transpose=transpose, seed=5), transpose)
    finally:
        torch.set_num_threads(threads)
