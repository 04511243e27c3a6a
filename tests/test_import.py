"""`import metalearn_ext` never fails because a backend is missing (backends() says why, and the reference
runs instead), and where the extension is built, importing is all it takes to use its ops."""
import subprocess
import sys
from pathlib import Path

import pytest

import metalearn_ext

ROOT = Path(__file__).resolve().parents[1]

WITHOUT_EXTENSION = """
import sys
sys.modules["metalearn_ext._C"] = None  # as if the extension had not been built
sys.modules["triton"] = None            # and triton were not installed
import torch, metalearn_ext
report = metalearn_ext.backends()
assert report["reference"].available
for name in ("cpp", "cuda", "triton"):
    assert not report[name].available and report[name].reason, (name, report[name])
assert "pip install --no-build-isolation -e ." in report["cpp"].reason, report["cpp"].reason
from metalearn_ext.ops.vsml_step.inputs import make_inputs
from metalearn_ext.ops.choice import choose_backend
x = make_inputs(1, 2, 3, 8, 2)
assert choose_backend("vsml_step", None, *x, 2) == "reference"
h, c, fm, bm = metalearn_ext.vsml_step(*x, ticks=2)
try:
    metalearn_ext.vsml_step(*x, backend="cpp")
except RuntimeError as e:
    assert "not available" in str(e) and "pip install --no-build-isolation -e ." in str(e), str(e)
else:
    raise AssertionError("a forced unavailable backend must raise")
print("ok")
"""

# Nothing but the import: the op, its fake (FakeTensor / torch.compile) and its autograd are there.
OPS_AFTER_IMPORT = """
import torch, metalearn_ext
from torch._subclasses.fake_tensor import FakeTensorMode
from metalearn_ext.ops.vsml_step.inputs import make_inputs
x = make_inputs(1, 2, 3, 8, 2)
op = torch.ops.metalearn_ext.vsml_step
with FakeTensorMode() as mode:
    shapes = [tuple(o.shape) for o in op(*[mode.from_tensor(t) for t in x], 2)]
assert shapes == [(1, 2, 3, 8), (1, 2, 3, 8), (1, 3, 8), (1, 2, 8)], shapes
leaves = [t.requires_grad_(True) for t in x]
sum(o.sum() for o in op(*leaves, 2)).backward()
assert all(t.grad is not None for t in leaves)
print("ok")
"""


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_import_without_extension_or_triton():
    res = run(WITHOUT_EXTENSION)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_import_loads_the_extension():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    res = run(OPS_AFTER_IMPORT)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_every_op_is_exported():
    assert "vsml_step" in metalearn_ext.ops.__all__
    for name in metalearn_ext.ops.__all__:
        assert getattr(metalearn_ext, name) is getattr(metalearn_ext.ops, name)
