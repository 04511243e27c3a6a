"""mann_memory_step on every backend the machine has, against the reference (ARCHITECTURE.md: three bars).

The harness (backend fixture, NaN-filled allocations, float64 truth, tolerances) is tests/ops/conftest.py.
"""
from __future__ import annotations

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.mann_memory_step import (
    least_used,
    mann_memory_step,
    mann_memory_step_reference,
)
from metalearn_ext.ops.mann_memory_step.inputs import make_inputs, make_upstream
from metalearn_ext.ops.testing import outputs_and_grads
from tests.ops.conftest import (
    assert_close_fp32,
    assert_compiles_fullgraph,
    assert_cpu_backend_choice,
    float64_truth,
    nan_filled_allocations,
)

OP = "mann_memory_step"
INPUTS = ["memory", "usage", "read_weights", "keys", "add", "alpha"]
OUTPUTS = ["memory'", "read_weights'", "reads", "usage'", "write_weights"]
GAMMA = 0.95

SHAPES = [  # (B, H, S, W)
    (2, 4, 16, 8),
    (1, 1, 1, 1),
    (3, 2, 13, 7),
    (2, 5, 37, 41),  # past the 32-wide SIMD blocks in S and W, with tails
    (1, 4, 128, 40),  # the paper's memory
    (2, 6, 6, 3),  # H = S: every slot is written
]


def cpp_available() -> None:
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def step(backend, gamma=GAMMA):
    return lambda *a: mann_memory_step(*a, gamma=gamma, backend=backend)


def check_against_reference(backend, inputs, upstream, gamma=GAMMA, what=""):
    """Outputs and every gradient against the float64 reference, with NaN-filled allocations."""
    before = [x.clone() for x in inputs]
    with nan_filled_allocations():
        out, grads = outputs_and_grads(step(backend, gamma), inputs, upstream)
    want_out, want_grads = float64_truth(lambda *a: mann_memory_step_reference(*a, gamma), inputs, upstream)
    for name, a, e in zip(OUTPUTS, out, want_out):
        assert a.shape == e.shape and a.dtype == inputs[0].dtype
        assert torch.isfinite(a).all(), f"{what}{name}: non-finite (unwritten?) elements"
        assert_close_fp32(a, e, f"{what}{name}")
    for name, a, e in zip(INPUTS, grads, want_grads):
        assert torch.isfinite(a).all(), f"{what}grad {name}: non-finite elements"
        assert_close_fp32(a, e, f"{what}grad {name}")
    for x, y in zip(inputs, before):
        assert torch.equal(x, y), "inputs were modified in place"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_matches_reference(backend, device, shape, ties):
    inputs = make_inputs(*shape, device=device, seed=hash((shape, ties)) % 2**31, usage_ties=ties)
    check_against_reference(backend, inputs, make_upstream(*shape, device=device))


def test_ties_follow_the_stable_sort(backend, device):
    """Equal usage: the lower slot index is the less used one (torch.sort(stable=True))."""
    B, H, S, W = 2, 3, 8, 4
    inputs = make_inputs(B, H, S, W, device=device, seed=2)
    inputs[1] = torch.tensor([[1.0, 0.5, 0.5, 2.0, 0.5, 0.5, 3.0, 0.0],
                              [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], device=device)
    assert least_used(inputs[1], H).tolist() == [[7, 1, 2], [0, 1, 2]]
    out = mann_memory_step(*inputs, backend=backend)
    lu = (out[4] - inputs[5][:, :, None] * inputs[2]) / (1 - inputs[5][:, :, None])  # the one-hot rows
    assert lu.argmax(-1).tolist() == [[7, 1, 2], [0, 1, 2]]
    assert (out[0][0, 7] - (out[4][0, :, 7, None] * inputs[4][0]).sum(0)).abs().max() < 1e-6  # row 7 was zeroed
    check_against_reference(backend, inputs, make_upstream(B, H, S, W, device=device), what="ties ")


def test_gamma_values(backend, device):
    inputs = make_inputs(2, 2, 9, 5, device=device, seed=8)
    for gamma in (0.0, 0.5, 1.0):
        check_against_reference(backend, inputs, make_upstream(2, 2, 9, 5, device=device), gamma, f"gamma={gamma} ")


def test_non_contiguous_inputs(backend, device):
    B, H, S, W = 3, 4, 11, 9
    inputs = make_inputs(B, H, S, W, device=device, seed=3)
    inputs = [x.transpose(-1, -2).contiguous().transpose(-1, -2) if x.dim() > 1 else x for x in inputs]
    inputs[1] = inputs[1].repeat_interleave(2, dim=-1)[:, ::2]
    assert not any(x.is_contiguous() for x in inputs)
    check_against_reference(backend, inputs, make_upstream(B, H, S, W, device=device), what="non-contiguous ")


def test_zero_memory_and_keys_are_finite(backend, device):
    """The first step of an episode: memory all (near) zero; a zero key; NaN never appears."""
    B, H, S, W = 2, 3, 10, 6
    inputs = make_inputs(B, H, S, W, device=device, seed=4)
    inputs[0] = torch.zeros(B, S, W, device=device)
    inputs[0][1] = 1e-6  # the paper's initialization
    inputs[3][0, 1] = 0
    inputs[4][1, 2] = 0  # a zero add vector: a written slot can stay zero
    out, grads = outputs_and_grads(step(backend), inputs, make_upstream(B, H, S, W, device=device))
    for t in [*out, *grads]:
        assert torch.isfinite(t).all()
    check_against_reference(backend, inputs, make_upstream(B, H, S, W, device=device), what="zeros ")


def test_episode_of_steps_matches_reference(backend, device):
    """Ten chained steps, backpropagated through all of them: errors do not grow along the episode."""
    B, H, S, W = 2, 4, 16, 8
    memory, usage, read_weights, *_ = make_inputs(B, H, S, W, device=device, seed=9)
    g = torch.Generator().manual_seed(10)
    per_step = torch.randn(10, 3, B, H, W, generator=g).to(device)
    gates = torch.rand(10, B, H, generator=g).to(device)

    def episode(fn, memory, read_weights, per_step, gates):
        # reads depend on usage only through the choice of slots: no gradient, so usage is no input here
        usage_t = usage.to(memory)
        total = 0
        for t in range(10):
            memory, read_weights, reads, usage_t, _ = fn(memory, usage_t, read_weights, per_step[t, 0].tanh(),
                                                         per_step[t, 1].tanh(), gates[t])
            total = total + (reads * per_step[t, 2]).sum()
        return [total]

    inputs = [memory, read_weights, per_step, gates]
    got = outputs_and_grads(lambda *a: episode(step(backend), *a), inputs, [torch.ones((), device=device)])
    want = float64_truth(lambda *a: episode(lambda *b: mann_memory_step_reference(*b, GAMMA), *a), inputs,
                         [torch.ones(())])
    for a, e in zip([*got[0], *got[1]], [*want[0], *want[1]]):
        assert_close_fp32(a, e, "episode")


def test_only_some_outputs_used(backend, device):
    inputs = make_inputs(2, 3, 7, 5, device=device, seed=5)
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    ref_leaves = [x.detach().clone().requires_grad_() for x in inputs]
    mann_memory_step(*leaves, backend=backend)[2].sum().backward()
    mann_memory_step_reference(*ref_leaves, GAMMA)[2].sum().backward()
    for x, r in zip(leaves, ref_leaves):  # the reads do not depend on usage: the reference leaves it None
        torch.testing.assert_close(x.grad, r.grad if r.grad is not None else torch.zeros_like(x), rtol=1e-5,
                                   atol=1e-5)


def test_float64_matches_reference_tightly():
    cpp_available()
    inputs = make_inputs(3, 4, 37, 41, dtype=torch.float64, seed=6)
    upstream = make_upstream(3, 4, 37, 41, dtype=torch.float64)
    got = outputs_and_grads(step("cpp"), inputs, upstream)
    want = outputs_and_grads(lambda *a: mann_memory_step_reference(*a, GAMMA), inputs, upstream)
    for a, e in zip([*got[0], *got[1]], [*want[0], *want[1]]):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)


def test_gradcheck_float64_cpp():
    cpp_available()
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 5, 4, dtype=torch.float64)]
    assert torch.autograd.gradcheck(step("cpp"), inputs)


def test_gradcheck_float64_reference():
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 2, 4, 3, dtype=torch.float64)]
    assert torch.autograd.gradcheck(step("reference"), inputs)


def test_opcheck_cpp():
    cpp_available()
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 6, 5)]
    torch.library.opcheck(torch.ops.metalearn_ext.mann_memory_step.default, (*inputs, GAMMA))


@pytest.mark.slow
def test_torch_compile_fullgraph(backend, device):
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 9, 5, device=device)]

    def f(*args):
        memory, read_weights, reads, usage, write_weights = mann_memory_step(*args, backend=backend)
        memory, read_weights, reads2, usage, _ = mann_memory_step(memory, usage, read_weights, reads.tanh(),
                                                                  args[4], args[5], backend=backend)
        return (reads * reads2).sum() + usage.square().sum() + memory.sum() + write_weights.sum()

    assert_compiles_fullgraph(f, inputs)


def test_backend_choice():
    assert_cpu_backend_choice(OP, lambda *x, backend: mann_memory_step(*x, backend=backend), make_inputs(1, 2, 3, 4),
                              GAMMA)
