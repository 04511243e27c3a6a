"""blur_step's (and blur_forward's) CPU kernels in the builds one process does not pick by itself, each against the float64
reference in a child process: the direct kernel capped to AVX2 and to the baseline (METALEARN_CPU_ISA, read
once per process), and the composed implementation of csrc/blur_step.cpp (METALEARN_BLUR_STEP_COMPOSED=1),
the device-generic fallback the direct kernel replaced on CPU.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metalearn_ext

SCRIPT = """
import torch
from metalearn_ext.ops.blur_step import blur_step, blur_step_reference
from tests.ops.test_blur_step import make_inputs
cases = [((33, 18, 5), 4, "per_copy", 17, (True, True, "relu_tanh", "tanh")),
         ((16, 16), 2, "shared", 1, (False, False, "tanh", "identity")),
         ((9, 8, 7, 3), 3, "per_layer", 8, (True, False, "identity", "relu_tanh"))]
for sizes, k, genome, B, flags in cases:
    for dtype, rtol, atol in ((torch.float64, 1e-10, 1e-11), (torch.float32, 1e-4, 2e-5)):
        leaves, args = make_inputs(sizes, k, genome, T=2, B=B, seed=len(sizes) + k)
        low = [t.detach().to(dtype).requires_grad_(True) for t in leaves]
        L = len(args[0])
        largs = [low[:L], low[L], low[L + 1], *(v.expand(L, *v.shape[1:]) for v in low[L + 2:])]
        res = []
        for fn, lv, a in ((blur_step_reference, leaves, args), (lambda *a: blur_step(*a, backend="cpp"), low, largs)):
            new, pred = fn(*a, *flags)
            g = torch.Generator().manual_seed(1)
            ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in (*new, pred)]
            grads = torch.autograd.grad([*new, pred], lv, ups, allow_unused=True)  # depth 1: f is unused
            res.append([*new, pred, *(torch.zeros_like(t) if d is None else d for d, t in zip(grads, lv))])
        for a, b in zip(res[1], res[0]):
            torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()))
        # without x's gradient (x_grad=False): the same other gradients
        low = [t.detach() for t in low]
        largs = [low[:L], low[L], low[L + 1], *(v.expand(L, *v.shape[1:]) for v in low[L + 2:])]
        ups = [torch.randn(w.shape, generator=torch.Generator().manual_seed(2), dtype=dtype) for w in low[:L]]
        full, part = (torch.ops.metalearn_ext.blur_step_backward(ups, None, *largs, *flags, xg) for xg in (True, False))
        for a, b in zip([*full[0], *full[2:]], [*part[0], *part[2:]]):
            torch.testing.assert_close(b, a, rtol=rtol, atol=atol * max(1.0, a.abs().max().item()))
from metalearn_ext.ops.blur_forward import blur_forward, blur_forward_reference
from tests.ops.test_blur_forward import make_inputs as forward_inputs
for sizes, k, genome, B in (((33, 18, 5), 4, "per_copy", 17), ((64, 20, 5), 2, "per_layer", 64)):
    for dtype, rtol, atol in ((torch.float64, 1e-10, 1e-11), (torch.float32, 1e-4, 2e-5)):
        leaves, args = forward_inputs(sizes, k, genome, T=2, B=B, seed=k)
        L = len(args[0])
        low = [t.detach().to(dtype).requires_grad_(True) for t in leaves]
        largs = [low[:L], low[L], *(v.expand(L, *v.shape[1:]) for v in low[L + 1:])]
        res = []
        for fn, lv, a in ((blur_forward_reference, leaves, args), (lambda *a: blur_forward(*a, backend="cpp"), low, largs)):
            pred = fn(*a)
            up = torch.randn(pred.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(pred.dtype)
            res.append([pred, *torch.autograd.grad(pred, lv, up)])
        for a, b in zip(res[1], res[0]):
            torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()))
print("ok")
"""


@pytest.mark.parametrize("env", [{"METALEARN_CPU_ISA": "avx2"}, {"METALEARN_CPU_ISA": "baseline"},
                                 {"METALEARN_BLUR_STEP_COMPOSED": "1"}], ids=["avx2", "baseline", "composed"])
def test_cpu_build_matches_reference(env):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, **env, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                         check=False, cwd=root)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
