"""content_read on every backend the machine has, against the reference (ARCHITECTURE.md: three bars).

The harness (backend fixture, NaN-filled allocations, float64 truth, tolerances) is tests/ops/conftest.py.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.content_read import content_read, content_read_reference
from metalearn_ext.ops.content_read.inputs import make_inputs, make_upstream
from metalearn_ext.ops.testing import outputs_and_grads
from tests.ops.conftest import (
    assert_close_fp32,
    assert_compiles_fullgraph,
    assert_cpu_backend_choice,
    float64_truth,
    nan_filled_allocations,
)

OP = "content_read"
OUTPUTS = ["weights", "reads"]

SHAPES = [  # (B, H, S, W)
    (2, 4, 16, 8),
    (1, 1, 1, 1),
    (3, 2, 13, 7),
    (2, 5, 37, 41),  # past the 32-wide SIMD blocks in S and W, with tails
    (1, 3, 128, 40),  # the paper's memory
    (4, 1, 9, 64),
    (1, 3, 9, 56),  # column blocks of 40 and 16
    (2, 2, 17, 32),  # a column block of 32
]


def cpp_available() -> None:
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def check_against_reference(backend, device, inputs, upstream, what=""):
    """Outputs and every gradient against the float64 reference, with NaN-filled allocations."""
    names = ["memory", "keys", "beta"][:len(inputs)]
    before = [x.clone() for x in inputs]
    with nan_filled_allocations():
        out, grads = outputs_and_grads(lambda *a: content_read(*a, backend=backend), inputs, upstream)
    want_out, want_grads = float64_truth(content_read_reference, inputs, upstream)
    for name, a, e in zip(OUTPUTS, out, want_out):
        assert a.shape == e.shape and a.dtype == inputs[0].dtype
        assert torch.isfinite(a).all(), f"{what}{name}: non-finite (unwritten?) elements"
        assert_close_fp32(a, e, f"{what}{name}")
    for name, a, e in zip(names, grads, want_grads):
        assert torch.isfinite(a).all(), f"{what}grad {name}: non-finite elements"
        assert_close_fp32(a, e, f"{what}grad {name}")
    for x, y in zip(inputs, before):
        assert torch.equal(x, y), "inputs were modified in place"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_beta", [False, True], ids=["beta_none", "beta"])
def test_matches_reference(backend, device, shape, with_beta):
    inputs = make_inputs(*shape, with_beta=with_beta, device=device, seed=hash((shape, with_beta)) % 2**31)
    check_against_reference(backend, device, inputs, make_upstream(*shape, device=device))


def test_non_contiguous_inputs(backend, device):
    B, H, S, W = 3, 4, 11, 9
    memory, keys, beta = make_inputs(B, H, S, W, device=device, seed=3)
    inputs = [memory.transpose(1, 2).contiguous().transpose(1, 2),  # the same values, other strides
              keys.repeat_interleave(2, dim=-1)[..., ::2], beta.t().contiguous().t()]
    assert not any(x.is_contiguous() for x in inputs)
    check_against_reference(backend, device, inputs, make_upstream(B, H, S, W, device=device), "non-contiguous ")


def test_memory_rows_of_many_magnitudes(backend, device):
    """Slot norms from 1e-4 to 1e4 and tiny ones near sqrt(COS_EPS): the float kernel's vector inverse
    square root (a first guess and Newton steps) is as accurate as the exact one over that range."""
    B, H, S, W = 2, 3, 37, 9  # S past a multiple of 8: the padded tail too
    memory, keys, beta = make_inputs(B, H, S, W, device=device, seed=12)
    scale = torch.logspace(-4, 4, S, device=device)[torch.randperm(S, generator=torch.Generator().manual_seed(0))]
    memory = memory * scale[None, :, None]
    memory[1, :4] *= 1e-2  # norms around sqrt(COS_EPS) = 1e-4, where eps matters
    check_against_reference(backend, device, [memory, keys, beta], make_upstream(B, H, S, W, device=device),
                            "magnitudes ")


def test_zero_rows_and_keys_are_finite(backend, device):
    """A zero memory row or key has cosine 0 (COS_EPS), never NaN, in the outputs and every gradient."""
    B, H, S, W = 2, 3, 10, 6
    memory, keys, beta = make_inputs(B, H, S, W, device=device, seed=4)
    memory[0, 3] = 0
    memory[1] = 0  # a whole memory of zeros, as at the start of an episode
    keys[0, 1] = 0
    for inputs in ([memory, keys], [memory, keys, beta]):
        out, grads = outputs_and_grads(lambda *a: content_read(*a, backend=backend), inputs,
                                       make_upstream(B, H, S, W, device=device))
        for t in [*out, *grads]:
            assert torch.isfinite(t).all()
        torch.testing.assert_close(out[0][1], torch.full((H, S), 1 / S, device=device))  # all cosines 0
        check_against_reference(backend, device, inputs, make_upstream(B, H, S, W, device=device), "zeros ")


def test_only_some_outputs_used(backend, device):
    """An output that gets no gradient counts as zero in the backward."""
    inputs = make_inputs(2, 3, 7, 5, device=device, seed=5)
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    ref_leaves = [x.detach().clone().requires_grad_() for x in inputs]
    content_read(*leaves, backend=backend)[1].sum().backward()
    content_read_reference(*ref_leaves)[1].sum().backward()
    for x, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(x.grad, r.grad, rtol=1e-5, atol=1e-5)


def test_float64_matches_reference_tightly():
    cpp_available()
    for with_beta in (False, True):
        inputs = make_inputs(3, 4, 37, 41, with_beta=with_beta, dtype=torch.float64, seed=6)
        upstream = make_upstream(3, 4, 37, 41, dtype=torch.float64)
        got = outputs_and_grads(lambda *a: content_read(*a, backend="cpp"), inputs, upstream)
        want = outputs_and_grads(content_read_reference, inputs, upstream)
        for a, e in zip([*got[0], *got[1]], [*want[0], *want[1]]):
            torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)


def test_gradcheck_float64_cpp():
    cpp_available()
    for with_beta in (False, True):
        inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 5, 4, with_beta=with_beta, dtype=torch.float64)]
        assert torch.autograd.gradcheck(lambda *a: content_read(*a, backend="cpp"), inputs)


def test_gradcheck_float64_reference():
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 2, 4, 3, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: content_read(*a, backend="reference"), inputs)


def test_opcheck_cpp():
    cpp_available()
    for with_beta in (False, True):
        memory, keys, *beta = [x.requires_grad_(True) for x in make_inputs(2, 3, 6, 5, with_beta=with_beta)]
        torch.library.opcheck(torch.ops.metalearn_ext.content_read.default, (memory, keys, beta[0] if beta else None))


@pytest.mark.slow
def test_torch_compile_fullgraph(backend, device):
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 9, 5, device=device)]

    def f(memory, keys, beta):
        w1, r1 = content_read(memory, keys, beta, backend=backend)
        w2, r2 = content_read(memory, r1.tanh(), None, backend=backend)  # beta None in the same graph
        return (w1 * w2).sum() + (r2 ** 2).sum()

    assert_compiles_fullgraph(f, inputs)


def test_double_backward_matches_reference():
    cpp_available()
    inputs = make_inputs(2, 3, 6, 4, dtype=torch.float64, seed=7)

    def second_order(fn):
        leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
        loss = sum((o.sin() * o).sum() for o in fn(*leaves))
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in grads), leaves)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one double-backward warning is tested for vsml_step
        got = second_order(lambda *a: content_read(*a, backend="cpp"))
    for a, e in zip(got, second_order(content_read_reference)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_backend_choice():
    inputs = make_inputs(1, 2, 3, 4)
    assert_cpu_backend_choice(OP, content_read, inputs)
    with pytest.raises(ValueError, match="backend must be one of"):
        content_read(*inputs, backend="fastest")


@pytest.mark.cuda
def test_cuda_backend_is_used_for_cuda_tensors():
    if not metalearn_ext.backends()["cuda"].available:
        pytest.skip(metalearn_ext.backends()["cuda"].reason)
    assert choose_backend(OP, None, *make_inputs(1, 2, 3, 4, device="cuda")) == "cuda"
