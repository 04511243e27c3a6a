"""What only the Triton backend has: its own custom ops (opcheck), dtype/N errors, availability, inductor.

Correctness against the reference on every backend lives in test_vsml_step.py.

Runs on a CUDA GPU when there is one, else on CPU under the Triton interpreter
(TRITON_INTERPRET=1, set here before anything imports triton). Shapes stay tiny so the
interpreter finishes the module in well under a minute.
"""

import os
import shutil

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from metalearn_ext.ops import triton_support
from metalearn_ext.ops.vsml_step import triton as vt
from metalearn_ext.ops.vsml_step.reference import vsml_step_reference

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_OK, _WHY = triton_support.supports(DEVICE)
pytestmark = pytest.mark.skipif(
    not _OK, reason=f"Triton cannot run on {DEVICE}: {_WHY}"
)

RTOL, ATOL = 1e-5, 1e-5


def _inputs(T, A, B, N, M, shared_w, shared_b, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE)

    w_shape = (4 * N, 2 * M + N) if shared_w else (T, 4 * N, 2 * M + N)
    b_shape = (4 * N,) if shared_b else (T, 4 * N)
    return [
        r(T, A, B, N),
        r(T, A, B, N),
        r(T, A, M),
        r(T, B, M),
        r(*w_shape, scale=0.4),
        r(*b_shape, scale=0.4),
    ]


def test_rejects_bad_dtype_and_state_size():
    inputs = _inputs(1, 2, 2, 8, 2, True, True)
    with pytest.raises(ValueError, match="float64"):
        vt.vsml_step_triton(*[x.double() for x in inputs], 1)
    h, c, fwd_in, bwd_in, _, _ = _inputs(1, 2, 2, 12, 2, True, True)
    w, b = torch.zeros(48, 16, device=DEVICE), torch.zeros(48, device=DEVICE)
    with pytest.raises(ValueError, match="N=12"):
        vt.vsml_step_triton(h, c, fwd_in, bwd_in, w, b, 1)


def test_availability_reports():
    assert triton_support.available() == (True, "")
    assert triton_support.supports(DEVICE) == (True, "")
    ok, why = triton_support.supports(torch.device("meta"))
    assert not ok and "meta" in why


def test_opcheck():
    inputs = _inputs(1, 3, 2, 8, 2, False, True, seed=6)
    leaves = [x.clone().requires_grad_() for x in inputs]
    torch.library.opcheck(
        torch.ops.metalearn_ext.vsml_step_triton.default, (*leaves, 2)
    )
    outs = vsml_step_reference(*inputs, 2)
    grads = [torch.randn_like(o) for o in outs]
    torch.library.opcheck(
        torch.ops.metalearn_ext.vsml_step_triton_backward.default, (*grads, *inputs, 2)
    )


def test_torch_compile_fullgraph():
    inputs = _inputs(1, 3, 5, 16, 2, True, True, seed=7)

    def f(h, c, fwd_in, bwd_in, w, b):
        h2, c2, fm, bm = vt.vsml_step_triton(h, c, fwd_in, bwd_in, w, b, 2)
        return (h2 * c2).sum() + fm.square().sum() + bm.sum()

    if DEVICE.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip(
            "torch.compile's inductor needs a C++ compiler for the CPU parts of the graph; none found"
        )
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
