#!/usr/bin/env bash
# One short pass on a borrowed GPU machine: build, CUDA tests, benchmarks, compute-sanitizer memcheck on a
# small case — in order of importance, each stage logged to $OUT (or ./gpu_out) as it finishes, so a
# pass cut short still leaves what it did. Set GPU_CHECK_FULL=1 to include Triton and torch.compile.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" PYTHONUNBUFFERED=1
export PATH="${CUDA_HOME}/bin:$PATH" MAX_JOBS="${MAX_JOBS:-16}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
stage() { echo; echo "=== $1 ($(date +%T))"; }
{
stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, triton, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"

build() {  # $1: log name; compiler from $CXX (torch's default otherwise)
  echo "compiler: ${CXX:-$(command -v c++)} ($(${CXX:-c++} --version | head -1))"
  rm -rf build metalearn_ext/_C*.so
  METALEARN_FORCE_CUDA=1 timeout 240 "$PY" setup.py build_ext --inplace >"$OUT/$1" 2>&1
  rc=$?; [ $rc -eq 0 ] || { echo "BUILD FAILED ($rc)"; grep -n -m 20 -i "error" "$OUT/$1"; return 1; }
}
smoke() {  # one tiny call of each kernel in a child process: a crash here must not end the check
  timeout 60 "$PY" -X faulthandler -c "
import torch, metalearn_ext
from metalearn_ext.ops.vsml_step.inputs import make_inputs
print({k: v.available for k, v in metalearn_ext.backends().items()})
for dev in ('cpu', 'cuda'):
    x = [t.requires_grad_(True) for t in make_inputs(2, 5, 3, 16, 8, device=dev)]
    out = metalearn_ext.vsml_step(*x, ticks=2, backend='cpp' if dev == 'cpu' else 'cuda')
    sum(o.sum() for o in out).backward(); print(dev, 'forward+backward ran', flush=True)
" 2>&1 | grep -v "^  File"
}
stage "build"
build build.log || exit 1
stage "smoke"
if ! smoke; then
  # Seen 2026-11-26 on an H200 image (torch 2.11, /opt/gcc): every call into the extension crashed
  # (SIGSEGV), CPU op included, before the argument checks returned. Bisect: the system compiler,
  # then a CPU-only build, so the log says which part is at fault.
  ok=0
  for cxx in /usr/bin/g++ /usr/bin/c++; do
    [ -x "$cxx" ] || continue
    stage "rebuild with $cxx"; CXX=$cxx CC=/usr/bin/gcc build build_system_cxx.log && smoke && { ok=1; break; }
  done
  if [ $ok = 0 ]; then
    stage "bisect: CPU-only build with the default compiler"
    rm -rf build metalearn_ext/_C*.so
    METALEARN_SKIP_CUDA_BUILD=1 timeout 240 "$PY" setup.py build_ext --inplace >"$OUT/build_cpu_only.log" 2>&1
    timeout 60 "$PY" -X faulthandler -c "
import torch, metalearn_ext
from metalearn_ext.ops.vsml_step.inputs import make_inputs
x = make_inputs(2, 5, 3, 16, 8)
print(metalearn_ext.backends()['cpp']); metalearn_ext.vsml_step(*x, ticks=2, backend='cpp'); print('cpu-only build: cpp op ran')"
    exit 1
  fi
fi

stage "CUDA tests"
sel="(cuda or mixed_devices) and not emulated"
[ "${GPU_CHECK_FULL:-0}" = 1 ] && sel="(cuda or triton or mixed_devices) and not emulated"
timeout 120 "$PY" -m pytest -q --maxfail=10 -p no:cacheprovider tests/ops -k "$sel" 2>&1 | tail -15

stage "benchmarks"
variants="reference,cuda"; [ "${GPU_CHECK_FULL:-0}" = 1 ] && variants=""
METALEARN_BENCH_VARIANTS="$variants" timeout 150 "$PY" -m benchmarks.run --op vsml_step --device cuda \
  --json "$OUT/bench_vsml_step_cuda.json" 2>&1 | grep -v "^\[\|Warning"

stage "compute-sanitizer memcheck (small case, forward + backward, N = 8/16/32, ticks 3)"
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
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" /tmp/memcheck_case.py >"$OUT/memcheck.log" 2>&1
echo "memcheck exit code $?"; tail -4 "$OUT/memcheck.log"
stage "done"
} 2>&1 | tee "$OUT/gpu_check.log"
