"""mann_episode (MANN's whole recurrence in one call) on every backend the machine has, against the reference
(ARCHITECTURE.md: three bars); the reference against the step-by-step loop of nn.MANN; bad input.

The harness (backend fixture, NaN-filled allocations, float64 truth, tolerances) is tests/ops/conftest.py.
"""
from __future__ import annotations

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops import autograd as ops_autograd
from metalearn_ext.ops.mann_episode import mann_episode, mann_episode_loop, mann_episode_reference
from metalearn_ext.ops.mann_episode.inputs import make_inputs
from metalearn_ext.ops.testing import outputs_and_grads
from tests.ops.conftest import (
    assert_close_fp32,
    assert_compiles_fullgraph,
    assert_cpu_backend_choice,
    float64_truth,
    nan_filled_allocations,
)

OP = "mann_episode"
INPUTS = ["x_gates", "w_rec", "w_head", "b_head"]
OUTPUTS = ["h", "reads"]
GAMMA, INIT = 0.95, 1e-6

SHAPES = [  # (B, L, n, H, S, W)
    (2, 5, 8, 2, 6, 3),
    (1, 1, 1, 1, 1, 1),
    (3, 7, 13, 3, 11, 5),  # odd sizes everywhere
    (2, 4, 9, 4, 4, 2),  # H = S: every slot is written each step
    (4, 12, 40, 4, 128, 40),  # the paper's memory, a narrower controller
]


def cpp_available() -> None:
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def episode(backend, heads, slots, gamma=GAMMA, init=INIT):
    return lambda *a: mann_episode(*a, heads, slots, gamma, init, backend=backend)


def upstream_for(B, L, n, H, W, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, L, n, generator=g), torch.randn(B, L, H * W, generator=g)]


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(backend, device, shape):
    B, L, n, H, S, W = shape
    inputs = make_inputs(B, L, n, H, S, W)
    upstream = upstream_for(B, L, n, H, W)
    before = [x.clone() for x in inputs]
    with nan_filled_allocations():
        out, grads = outputs_and_grads(episode(backend, H, S), inputs, upstream)
    want_out, want_grads = float64_truth(lambda *a: mann_episode_reference(*a, H, S, GAMMA, INIT), inputs, upstream)
    for name, a, e in zip(OUTPUTS, out, want_out):
        assert a.shape == e.shape and a.dtype == torch.float32
        assert torch.isfinite(a).all(), f"{shape} {name}: non-finite (unwritten?) elements"
        assert_close_fp32(a, e, f"{shape} {name}")
    for name, a, e in zip(INPUTS, grads, want_grads):
        assert a.shape == e.shape and torch.isfinite(a).all(), f"{shape} grad {name}: non-finite elements"
        assert_close_fp32(a, e, f"{shape} grad {name}")
    for x, y in zip(inputs, before):
        assert torch.equal(x, y), "inputs were modified"


def test_float64_matches_reference_tightly():
    cpp_available()
    B, L, n, H, S, W = 3, 9, 11, 4, 16, 6
    inputs = make_inputs(B, L, n, H, S, W, dtype=torch.float64)
    upstream = [u.double() for u in upstream_for(B, L, n, H, W)]
    got = outputs_and_grads(episode("cpp", H, S), inputs, upstream)
    want = outputs_and_grads(episode("reference", H, S), inputs, upstream)
    for a, e in zip(got[0] + got[1], want[0] + want[1]):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs(backend, device):
    B, L, n, H, S, W = 3, 6, 7, 2, 9, 4
    x, w_rec, w_head, b_head = make_inputs(B, L, n, H, S, W)
    # x_gates as a (L, B, 4n) tensor's transpose, the weights as transposes of their transposes
    inputs = [x.transpose(0, 1).contiguous().transpose(0, 1), w_rec.t().contiguous().t(),
              w_head.t().contiguous().t(), b_head.repeat(2)[::2]]
    assert not any(t.is_contiguous() for t in inputs[:1] + inputs[3:])
    upstream = upstream_for(B, L, n, H, W)
    out, grads = outputs_and_grads(episode(backend, H, S), inputs, upstream)
    want_out, want_grads = float64_truth(lambda *a: mann_episode_reference(*a, H, S, GAMMA, INIT), inputs, upstream)
    for a, e, name in zip(out + grads, want_out + want_grads, OUTPUTS + INPUTS):
        assert_close_fp32(a, e, f"non-contiguous {name}")


def test_gamma_and_memory_init(backend, device):
    B, L, n, H, S, W = 2, 6, 5, 2, 7, 3
    inputs = make_inputs(B, L, n, H, S, W)
    upstream = upstream_for(B, L, n, H, W)
    for gamma, init in ((0.0, 0.0), (1.0, 0.5), (0.5, -0.25)):
        out, grads = outputs_and_grads(episode(backend, H, S, gamma, init), inputs, upstream)
        want_out, want_grads = float64_truth(lambda *a: mann_episode_reference(*a, H, S, gamma, init), inputs,
                                             upstream)
        for a, e, name in zip(out + grads, want_out + want_grads, OUTPUTS + INPUTS):
            assert torch.isfinite(a).all(), f"gamma={gamma} init={init} {name}: non-finite"
            assert_close_fp32(a, e, f"gamma={gamma} init={init} {name}")


def test_no_grad_forward_and_one_output_used(backend, device):
    B, L, n, H, S, W = 2, 8, 6, 3, 10, 4
    inputs = make_inputs(B, L, n, H, S, W)
    with torch.no_grad():
        h, r = mann_episode(*inputs, H, S, GAMMA, INIT, backend=backend)
    want_h, want_r = mann_episode_reference(*[x.double() for x in inputs], H, S, GAMMA, INIT)
    assert_close_fp32(h, want_h, "no-grad h")
    assert_close_fp32(r, want_r, "no-grad reads")
    for used in (0, 1):  # only h, only the reads reach the loss
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        got = torch.autograd.grad(mann_episode(*leaves, H, S, GAMMA, INIT, backend=backend)[used].square().sum(),
                                  leaves)
        ref = [x.double().requires_grad_(True) for x in inputs]
        want = torch.autograd.grad(mann_episode_reference(*ref, H, S, GAMMA, INIT)[used].square().sum(), ref)
        for a, e, name in zip(got, want, INPUTS):
            assert_close_fp32(a, e, f"only output {used} used: grad {name}")


def test_buffers_in_use_are_not_reused():
    """Two episodes in flight at once (both graphs alive, backwards in reverse order), outputs kept across calls
    and an interleaved call of other sizes: each gets its own right gradients (the op reuses a call's buffers only
    once nothing else holds them)."""
    cpp_available()
    shapes = [(2, 5, 6, 2, 8, 3), (2, 5, 6, 2, 8, 3), (3, 4, 5, 1, 6, 2)]
    runs = []
    for i, (B, L, n, H, S, W) in enumerate(shapes):
        leaves = [x.requires_grad_(True) for x in make_inputs(B, L, n, H, S, W, seed=i)]
        out = mann_episode(*leaves, H, S, GAMMA, INIT, backend="cpp")
        runs.append((leaves, out, upstream_for(B, L, n, H, W, seed=10 + i), (H, S)))
    for leaves, out, upstream, (H, S) in reversed(runs):
        kept = [o.detach().clone() for o in out]
        grads = torch.autograd.grad(sum((o * u).sum() for o, u in zip(out, upstream)), leaves)
        want_out, want_grads = float64_truth(lambda *a: mann_episode_reference(*a, H, S, GAMMA, INIT), leaves,
                                             upstream)
        for a, e, name in zip(kept + list(grads), want_out + want_grads, OUTPUTS + INPUTS):
            assert_close_fp32(a, e, f"interleaved {name}")
    # training-loop use: forward, backward, forward again (the buffers are reused) stays exact
    B, L, n, H, S, W = shapes[0]
    for seed in (5, 6):
        inputs = make_inputs(B, L, n, H, S, W, seed=seed)
        out, grads = outputs_and_grads(episode("cpp", H, S), inputs, upstream_for(B, L, n, H, W))
        want = float64_truth(lambda *a: mann_episode_reference(*a, H, S, GAMMA, INIT), inputs,
                             upstream_for(B, L, n, H, W))
        for a, e in zip(out + grads, want[0] + want[1]):
            assert_close_fp32(a, e, f"repeated call, seed {seed}")


def test_reference_is_the_loop_of_memory_steps():
    """The reference and nn.MANN's per-step loop (on the memory step's reference) are one computation."""
    B, L, n, H, S, W = 2, 6, 5, 2, 7, 3
    inputs = make_inputs(B, L, n, H, S, W, dtype=torch.float64)
    for a, b in zip(mann_episode_reference(*inputs, H, S, GAMMA, INIT),
                    mann_episode_loop(*inputs, H, S, GAMMA, INIT, step_backend="reference")):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradcheck_float64_cpp():
    cpp_available()
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 4, 3, 2, 5, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(episode("cpp", 2, 5), inputs)


def test_gradcheck_float64_reference():
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 3, 2, 4, 2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(episode("reference", 2, 4), inputs)


def test_opcheck_cpp():
    cpp_available()
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 3, 4, 2, 5, 3)]
    torch.library.opcheck(torch.ops.metalearn_ext.mann_episode.default, (*inputs, 2, 5, GAMMA, INIT))
    upstream = upstream_for(2, 3, 4, 2, 3)
    torch.library.opcheck(torch.ops.metalearn_ext.mann_episode_backward.default,
                          (*upstream, *[x.detach() for x in inputs], 2, 5, GAMMA, INIT))


def test_double_backward_goes_through_the_reference(monkeypatch):
    """create_graph=True: one warning, and second-order gradients equal the reference's."""
    cpp_available()
    monkeypatch.setattr(ops_autograd, "_warned_double_backward", set())
    B, L, n, H, S, W = 2, 3, 4, 2, 5, 2
    inputs = make_inputs(B, L, n, H, S, W, dtype=torch.float64)

    def second_order(fn):
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        h, r = fn(*leaves)
        first = torch.autograd.grad(h.square().sum() + r.sin().sum(), leaves, create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in first), leaves)

    with pytest.warns(UserWarning, match="mann_episode: its backward kernel is not differentiable"):
        got = second_order(episode("cpp", H, S))
    want = second_order(episode("reference", H, S))
    for a, e, name in zip(got, want, INPUTS):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9, msg=lambda m: f"second order {name}: {m}")


@pytest.mark.slow
def test_torch_compile_fullgraph():
    cpp_available()
    inputs = [x.requires_grad_(True) for x in make_inputs(2, 4, 5, 2, 6, 3)]

    def f(x, w_rec, w_head, b_head):
        h, r = mann_episode(x * 1.5, w_rec, w_head, b_head, 2, 6, GAMMA, INIT, backend="cpp")
        return h.square().sum() + r.sum()

    assert_compiles_fullgraph(f, inputs)


def test_backend_choice():
    assert_cpu_backend_choice(OP, lambda *x, backend: mann_episode(*x, 1, 2, backend=backend),
                              make_inputs(1, 2, 3, 1, 2, 2), 1, 2, GAMMA, INIT)


# ---- bad input: errors naming the argument ----

GOOD = dict(B=2, L=3, n=4, H=2, S=5, W=3)


def good():
    return make_inputs(*GOOD.values())


@pytest.mark.parametrize("backend_name", ["reference", "cpp"])
@pytest.mark.parametrize("change, match", [
    (lambda a: a.__setitem__(0, a[0][..., :-1]), r"x_gates must be a non-empty tensor of shape \(B, L, 4n\)"),
    (lambda a: a.__setitem__(0, a[0][0]), r"x_gates must be a non-empty tensor of shape \(B, L, 4n\)"),
    (lambda a: a.__setitem__(0, a[0][:, :0]), r"x_gates must be a non-empty tensor"),
    (lambda a: a.__setitem__(1, a[1][:, :-1]), r"w_rec must be of shape \(4n, H·W \+ n\) = \(16, 2·W \+ 4\)"),
    (lambda a: a.__setitem__(1, a[1][:-4]), r"w_rec must be of shape \(4n, H·W \+ n\)"),
    (lambda a: a.__setitem__(2, a[2][:-1]), r"w_head must be of shape \(2·H·W \+ H, n\) = \(14, 4\)"),
    (lambda a: a.__setitem__(2, a[2][:, :-1]), r"w_head must be of shape"),
    (lambda a: a.__setitem__(3, a[3][:-1]), r"b_head must be of shape \(2·H·W \+ H,\) = \(14\)"),
    (lambda a: a.__setitem__(3, a[3].double()), r"b_head"),
    (lambda a: a.__setitem__(1, a[1].tolist()), r"w_rec must be a torch.Tensor"),
    (lambda a: a.__setitem__(4, 0), r"heads must be a positive int, got 0"),
    (lambda a: a.__setitem__(4, 2.0), r"heads must be a positive int, got 2.0"),
    (lambda a: a.__setitem__(5, 1), r"heads \(2\) must be <= slots \(1\)"),
    (lambda a: a.__setitem__(6, float("nan")), r"gamma must be a finite float, got nan"),
    (lambda a: a.__setitem__(7, float("inf")), r"memory_init must be a finite float, got inf"),
])
def test_bad_input(backend_name, change, match):
    if backend_name == "cpp":
        cpp_available()
    args = [*good(), GOOD["H"], GOOD["S"], GAMMA, INIT]
    change(args)
    with pytest.raises((ValueError, TypeError), match=f"mann_episode: {match}"):
        mann_episode(*args, backend=backend_name)


def test_the_cpp_op_checks_its_arguments_itself():
    """Called past the Python checks (torch.ops), the kernel still refuses what would read out of bounds."""
    cpp_available()
    x, w_rec, w_head, b_head = good()
    op = torch.ops.metalearn_ext.mann_episode
    with pytest.raises(RuntimeError, match="mann_episode: w_head must be of shape"):
        op(x, w_rec, w_head[:-1], b_head, 2, 5, GAMMA, INIT)
    with pytest.raises(RuntimeError, match=r"mann_episode: need 1 <= heads <= slots"):
        op(x, w_rec, w_head, b_head, 2, 1, GAMMA, INIT)
    with pytest.raises(RuntimeError, match="mann_episode: every tensor must have x_gates' dtype and device"):
        op(x, w_rec.double(), w_head, b_head, 2, 5, GAMMA, INIT)
