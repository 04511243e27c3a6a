"""The C++ kernel's three x86 builds (AVX-512, AVX2, baseline SSE2), each against the reference.

The build is picked once per process from the CPU, capped by METALEARN_CPU_ISA, so each cap runs in
a child process.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metalearn_ext

SCRIPT = """
import torch
from metalearn_ext.ops.vsml_step import vsml_step, vsml_step_reference
from metalearn_ext.ops.vsml_step.inputs import make_inputs
# every float32 fast path (N = 4, 8, 12, 16, 24, 32) with odd sizes
cases = [((2, 5, 3, 16, 8), False), ((3, 7, 5, 8, 3), True), ((1, 4, 17, 32, 2), False),
         ((2, 3, 7, 4, 3), True), ((1, 5, 3, 12, 2), False), ((2, 3, 5, 24, 3), True)]
for shape, per_copy in cases:
    x = [t.requires_grad_(True) for t in make_inputs(*shape, per_copy=per_copy)]
    r = [t.detach().double().requires_grad_(True) for t in x]
    out, want = vsml_step(*x, ticks=2, backend="cpp"), vsml_step_reference(*r, ticks=2)
    for o, w in zip(out, want):
        torch.testing.assert_close(o.double(), w.detach(), rtol=2e-5, atol=2e-5)
    g = torch.autograd.grad(sum(o.sum() for o in out), x)
    gw = torch.autograd.grad(sum(o.sum() for o in want), r)
    for a, b in zip(g, gw):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=2e-5 * max(1.0, b.abs().max().item()))
print("ok")
"""


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_capped_isa_builds_match_reference(isa):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "METALEARN_CPU_ISA": isa, "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
