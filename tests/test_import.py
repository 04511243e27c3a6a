"""`import metalearn_ext` never fails because a backend is missing; backends() says why, and the
reference runs instead."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
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
from metalearn_ext.ops.vsml_step import select_backend
x = make_inputs(1, 2, 3, 8, 2)
assert select_backend(None, x[0]) == "reference"
h, c, fm, bm = metalearn_ext.vsml_step(*x, ticks=2)
try:
    metalearn_ext.vsml_step(*x, backend="cpp")
except RuntimeError as e:
    assert "not available" in str(e)
else:
    raise AssertionError("a forced unavailable backend must raise")
print("ok")
"""


def test_import_without_extension_or_triton():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
