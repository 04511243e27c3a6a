"""The C++ kernels of content_read and mann_memory_step in their three x86 builds (AVX-512, AVX2, baseline
SSE2), each against the float64 reference. The build is picked once per process from the CPU, capped by
METALEARN_CPU_ISA, so each cap runs in a child process.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metalearn_ext

SCRIPT = """
import torch
from metalearn_ext.ops.content_read import content_read, content_read_reference
from metalearn_ext.ops.content_read import inputs as ri
from metalearn_ext.ops.mann_memory_step import mann_memory_step, mann_memory_step_reference
from metalearn_ext.ops.mann_memory_step import inputs as si
from metalearn_ext.ops.testing import outputs_and_grads
# column blocks of 40 and 32/24/16/8 with tails, blocks of 8 slots with tails, odd and even head counts
for shape in [(2, 3, 13, 7), (2, 5, 37, 41), (1, 4, 64, 40), (1, 3, 9, 56), (1, 2, 17, 32)]:
    for fn, ref, mk, up in [(lambda *a: content_read(*a, backend="cpp"), content_read_reference, ri.make_inputs,
                             ri.make_upstream),
                            (lambda *a: mann_memory_step(*a, backend="cpp"),
                             lambda *a: mann_memory_step_reference(*a, 0.95), si.make_inputs, si.make_upstream)]:
        x, u = mk(*shape), up(*shape)
        got = outputs_and_grads(fn, x, u)
        want = outputs_and_grads(ref, [t.double() for t in x], [t.double() for t in u])
        for a, b in zip([*got[0], *got[1]], [*want[0], *want[1]]):
            torch.testing.assert_close(a.double(), b, rtol=2e-5, atol=2e-5 * max(1.0, b.abs().max().item()))
print("ok")
"""


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_capped_isa_builds_match_reference(isa):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "METALEARN_CPU_ISA": isa, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
