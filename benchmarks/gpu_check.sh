#!/usr/bin/env bash
# One short pass on a borrowed GPU machine (< 8 minutes): build, CUDA + Triton tests, compute-sanitizer
# memcheck on a small case, benchmarks. Logs and JSON go to $OUT (or ./gpu_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" PATH="${CUDA_HOME}/bin:$PATH" PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-16}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
stage() { echo; echo "=== $1 ($(date +%T))"; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda)"
"$PY" -c "import triton; print('triton', triton.__version__)" || true

stage "build"
METALEARN_FORCE_CUDA=1 timeout 300 "$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1
rc=$?; tail -5 "$OUT/build.log"; [ $rc -eq 0 ] || { echo "BUILD FAILED ($rc)"; grep -n -m 20 -i "error" "$OUT/build.log"; exit 1; }
"$PY" -c "import metalearn_ext as m; [print(k, v) for k, v in m.backends().items()]"

stage "tests (ops)"
METALEARN_REQUIRE_BACKENDS=cpp,cuda,triton timeout 200 "$PY" -m pytest -q -x tests/ops 2>&1 | tee "$OUT/tests.log" | tail -25

stage "compute-sanitizer memcheck (small case, forward + backward, ticks 3)"
cat >/tmp/memcheck_case.py <<'PYEOF'
import torch
from metalearn_ext.ops.vsml_step import vsml_step
from metalearn_ext.ops.vsml_step.inputs import make_inputs
for N in (8, 16, 32):
    for per_copy in (False, True):
        x = [t.requires_grad_(True) for t in make_inputs(3, 7, 5, N, 3, per_copy=per_copy, device="cuda")]
        out = vsml_step(*x, ticks=3, backend="cuda")
        sum(o.sum() for o in out).backward()
torch.cuda.synchronize(); print("memcheck case ran")
PYEOF
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" /tmp/memcheck_case.py >"$OUT/memcheck.log" 2>&1
echo "memcheck exit code $?"; tail -4 "$OUT/memcheck.log"

stage "benchmarks"
timeout 240 "$PY" -m benchmarks.run --op vsml_step --device cuda --json "$OUT/bench_vsml_step_cuda.json" 2>&1 \
  | tee "$OUT/bench.log" | grep -v "^\[" | tail -40
stage "done"
