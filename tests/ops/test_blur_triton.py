"""What only the Triton backend of blur_propagate / blur_hebbian has: its own custom ops (opcheck), dtype
errors, inductor. Correctness against the reference on every backend lives in test_blur_propagate.py and
test_blur_hebbian.py (run them with TRITON_INTERPRET=1 on a CPU-only machine to include Triton).

Runs on a CUDA GPU when there is one, else on CPU under the Triton interpreter (TRITON_INTERPRET=1, set
here before anything imports triton). Shapes stay tiny so the interpreter finishes quickly.
"""
import os
import shutil

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from metalearn_ext.ops import triton_support
from metalearn_ext.ops.blur_propagate.inputs import hebbian_inputs, propagate_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_OK, _WHY = triton_support.supports(DEVICE)
pytestmark = pytest.mark.skipif(not _OK, reason=f"Triton cannot run on {DEVICE}: {_WHY}")


def test_rejects_float64():
    from metalearn_ext.ops.blur_hebbian.triton import blur_hebbian_triton
    from metalearn_ext.ops.blur_propagate.triton import blur_propagate_triton

    with pytest.raises(ValueError, match="a must be float32, got torch.float64"):
        blur_propagate_triton(*propagate_inputs(1, 2, 3, 4, 2, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="weight must be float32, got torch.float64"):
        blur_hebbian_triton(*hebbian_inputs(1, 2, 3, 4, 2, dtype=torch.float64, device=DEVICE))


@pytest.mark.parametrize("transpose", [False, True])
def test_opcheck_propagate(transpose):
    from metalearn_ext.ops.blur_propagate import blur_propagate_reference
    from metalearn_ext.ops.blur_propagate import triton as _  # noqa: F401  (registers the custom ops)

    inputs = [x.requires_grad_() for x in propagate_inputs(2, 3, 4, 5, 2, transpose, per_copy=True, device=DEVICE)]
    torch.library.opcheck(torch.ops.metalearn_ext.blur_propagate_triton.default, (*inputs, transpose))
    grad = torch.randn_like(blur_propagate_reference(*inputs, transpose))
    torch.library.opcheck(torch.ops.metalearn_ext.blur_propagate_triton_backward.default,
                          (grad, *[x.detach() for x in inputs], transpose))


def test_opcheck_hebbian():
    from metalearn_ext.ops.blur_hebbian import triton as _  # noqa: F401

    inputs = [x.requires_grad_() for x in hebbian_inputs(2, 3, 4, 5, 2, device=DEVICE)]
    torch.library.opcheck(torch.ops.metalearn_ext.blur_hebbian_triton.default, (*inputs, True, True))
    grad = torch.randn_like(inputs[0])
    torch.library.opcheck(torch.ops.metalearn_ext.blur_hebbian_triton_backward.default,
                          (grad, *[x.detach() for x in inputs], True, True))


def test_torch_compile_fullgraph():
    from metalearn_ext.ops.blur_hebbian import blur_hebbian_reference
    from metalearn_ext.ops.blur_hebbian.triton import blur_hebbian_triton
    from metalearn_ext.ops.blur_propagate import blur_propagate_reference
    from metalearn_ext.ops.blur_propagate.triton import blur_propagate_triton

    if DEVICE == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile's inductor needs a C++ compiler for the CPU parts of the graph; none found")
    weight, pre, post, pre_mix, post_mix, decay, lr = hebbian_inputs(1, 3, 5, 4, 2, device=DEVICE, seed=7)

    def step(prop, hebb, weight, pre_mix, post_mix):
        out = torch.tanh(prop(pre, weight, pre_mix, False))
        return (hebb(weight, pre, out, pre_mix, post_mix, decay, lr, True, True) ** 2).sum()

    leaves = [x.clone().requires_grad_() for x in (weight, pre_mix, post_mix)]
    ref_leaves = [x.clone().requires_grad_() for x in (weight, pre_mix, post_mix)]
    loss = torch.compile(lambda *x: step(blur_propagate_triton, blur_hebbian_triton, *x), fullgraph=True)(*leaves)
    loss.backward()
    ref = step(blur_propagate_reference, blur_hebbian_reference, *ref_leaves)
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-5, atol=1e-5)
    for x, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(x.grad, r.grad, rtol=1e-4, atol=1e-5)
