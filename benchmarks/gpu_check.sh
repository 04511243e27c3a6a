#!/usr/bin/env bash
# One short pass on a borrowed GPU machine: toolchain, build, smoke test, CUDA tests, benchmarks,
# compute-sanitizer memcheck on a small case — in order of importance, each stage logged to $OUT (or
# ./gpu_out) as it finishes, so a pass cut short still leaves what it did. Every stage's timeout is cut
# to what is left of an 8-minute budget. Set GPU_CHECK_FULL=1 to include Triton and torch.compile.
#
# If the smoke test crashes, the log diagnoses it by itself: a native backtrace (cuda-gdb, else gdb),
# the runtimes the crashing process mapped, then rebuilds that bisect the cause (CC and CXX set to one
# toolchain, the compiler's own libstdc++ preloaded, the system compiler, a CPU-only build).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" PYTHONUNBUFFERED=1
export PATH="${CUDA_HOME}/bin:$PATH" MAX_JOBS="${MAX_JOBS:-16}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
BUDGET=470  # seconds; 8 minutes less the slack for the last stage's cleanup
stage() { echo; echo "=== $1 ($(date +%T), ${SECONDS}s in)"; }
left() {  # the timeout for a stage: at most $1 seconds, and no more than the budget has left
  local rest=$((BUDGET - SECONDS)); [ "$rest" -lt "$1" ] && echo $((rest > 5 ? rest : 5)) || echo "$1"
}
out_of_time() { [ $((BUDGET - SECONDS)) -lt "$1" ] && echo "(skipped: under $1 s of the budget left)"; }

# The smoke test: a file, so that a debugger can rerun exactly it. The first call into each kernel is
# an argument error, which only the C++ checks see (a crash there is not the kernel's arithmetic).
cat >"$OUT/smoke.py" <<'PYEOF'
import faulthandler, sys
faulthandler.enable()  # the Python frames of a crash, unfiltered
import torch, metalearn_ext
print("torch", torch.__version__, "CUDA", torch.version.cuda, "from", torch.__file__)
print("extension", metalearn_ext._C.__file__)
runtimes = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if any(k in line for k in ("libstdc++", "libgomp", "libgcc_s", "libiomp", "libcudart"))})
print("runtimes mapped in this process:", *runtimes, sep="\n  ")
print({k: v.available for k, v in metalearn_ext.backends().items()}, flush=True)
from metalearn_ext.ops.vsml_step.inputs import make_inputs
for dev in ("cpu", "cuda"):
    x = make_inputs(2, 5, 3, 16, 8, device=dev)
    bad = [*x[:2], x[2][:, :-1], *x[3:]]  # fwd_in (T, A-1, M)
    print(dev, "argument-error call ...", flush=True)
    try:
        torch.ops.metalearn_ext.vsml_step(*bad, 2)
        sys.exit(f"{dev}: a bad fwd_in shape raised nothing")
    except ValueError as e:
        print(dev, "raised ValueError as expected:", str(e).splitlines()[0], flush=True)
    x = [t.requires_grad_(True) for t in x]
    out = metalearn_ext.vsml_step(*x, ticks=2, backend="cpp" if dev == "cpu" else "cuda")
    sum(o.sum() for o in out).backward()
    print(dev, "forward+backward ran", flush=True)
PYEOF

toolchain() {  # what the build and the process will use
  local c seen=" "
  for c in "${CXX:-}" "${CC:-}" c++ /usr/bin/g++; do
    [ -n "$c" ] && c=$(command -v "$c") || continue
    case "$seen" in *" $c "*) continue ;; esac; seen="$seen$c "
    echo "--- $c -v"; "$c" -v 2>&1 | tail -3
    echo "    its libstdc++: $("$c" -print-file-name=libstdc++.so.6)"
  done
  echo "--- nvcc"; nvcc --version | tail -2
  echo "CC=${CC:-<unset>} CXX=${CXX:-<unset>}"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-<unset>}"
  echo "LD_PRELOAD=${LD_PRELOAD:-<unset>}"
}
build() {  # $1: log name; compilers from $CC / $CXX (setup.py passes nvcc -ccbin = the C++ compiler)
  rm -rf build metalearn_ext/_C*.so
  METALEARN_FORCE_CUDA=1 timeout "$(left 240)" "$PY" setup.py build_ext --inplace >"$OUT/$1" 2>&1
  local rc=$?
  grep -m1 "nvcc host compiler" "$OUT/$1"
  [ $rc -eq 0 ] || { echo "BUILD FAILED ($rc)"; grep -n -m 20 -i "error" "$OUT/$1"; return 1; }
  local torch_lib; torch_lib=$("$PY" -c "import os, torch; print(os.path.dirname(torch.__file__))")/lib
  echo "--- ldd $(ls metalearn_ext/_C*.so), with torch's lib/ as the loaded torch has it"
  LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd metalearn_ext/_C*.so | grep -v "linux-vdso"
}
smoke() {  # in a child process: a crash here must not end the check
  timeout "$(left 90)" "$PY" -X faulthandler "$OUT/smoke.py" 2>&1
}
native_backtrace() {  # $1: log name
  local dbg
  dbg=$(command -v cuda-gdb || command -v gdb) || { echo "no cuda-gdb or gdb here: no native backtrace"; return; }
  echo "native backtrace with $dbg (full log: $1)"
  timeout "$(left 120)" "$dbg" -batch -ex "set pagination off" -ex run -ex bt -ex "info sharedlibrary" \
    --args "$PY" "$OUT/smoke.py" >"$OUT/$1" 2>&1
  grep -n -A 40 -m 1 "received signal\|SIGSEGV\|SIGABRT" "$OUT/$1" || tail -40 "$OUT/$1"
}
cc_of() {  # the C compiler of the toolchain of C++ compiler $1 (g++ -> gcc, clang++ -> clang, c++ -> cc)
  local dir base; dir=$(dirname "$1"); base=$(basename "$1")
  case "$base" in
    *clang++*) echo "$dir/${base/clang++/clang}" ;;
    *g++*) echo "$dir/${base/g++/gcc}" ;;
    *) echo "$dir/${base/c++/cc}" ;;
  esac
}

{
stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, triton, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
stage "toolchain"
toolchain

stage "build"
if ! build build.log; then  # e.g. nvcc refusing $CXX as its host compiler: try the system one
  [ -x /usr/bin/g++ ] || exit 1
  stage "rebuild with the system compiler /usr/bin/g++"
  CXX=/usr/bin/g++ CC=/usr/bin/gcc build build_system_cxx.log || exit 1
  export CXX=/usr/bin/g++ CC=/usr/bin/gcc
fi
stage "smoke"
if ! smoke; then
  # Seen 2026-11-26 on an H200 image (torch 2.11, CXX=/opt/gcc/bin/g++, CC unset): every call into the
  # extension crashed (SIGSEGV), CPU op and argument errors included.
  stage "native backtrace of the crash"
  native_backtrace backtrace.log
  ok=0
  cxx=$(command -v "${CXX:-c++}")
  stage "rebuild with CC and CXX of one toolchain: CXX=$cxx CC=$(cc_of "$cxx")"
  if CXX="$cxx" CC="$(cc_of "$cxx")" build build_cc_cxx.log; then
    smoke && ok=1
    if [ $ok = 0 ] && [ -z "$(out_of_time 60)" ]; then
      stage "the same build, with $cxx's own libstdc++ preloaded"
      LD_PRELOAD="$("$cxx" -print-file-name=libstdc++.so.6)" smoke && ok=1
    fi
  fi
  for sys_cxx in /usr/bin/g++ /usr/bin/c++; do
    [ $ok = 0 ] && [ -x "$sys_cxx" ] && [ "$sys_cxx" != "$cxx" ] && [ -z "$(out_of_time 150)" ] || continue
    stage "rebuild with the system compiler $sys_cxx"
    CXX=$sys_cxx CC=$(cc_of "$sys_cxx") build build_system_cxx.log && smoke && ok=1
    break
  done
  if [ $ok = 0 ]; then
    stage "bisect: CPU-only build with the default compiler $(out_of_time 150)"
    if [ -z "$(out_of_time 150)" ]; then
      rm -rf build metalearn_ext/_C*.so
      METALEARN_SKIP_CUDA_BUILD=1 timeout "$(left 240)" "$PY" setup.py build_ext --inplace \
        >"$OUT/build_cpu_only.log" 2>&1
      timeout "$(left 60)" "$PY" -X faulthandler -c "
import torch, metalearn_ext
from metalearn_ext.ops.vsml_step.inputs import make_inputs
x = make_inputs(2, 5, 3, 16, 8)
print(metalearn_ext.backends()['cpp']); metalearn_ext.vsml_step(*x, ticks=2, backend='cpp'); print('cpu-only build: cpp op ran')" 2>&1
    fi
    exit 1
  fi
fi

stage "CUDA tests $(out_of_time 60)"
sel="(cuda or mixed_devices) and not emulated"
[ "${GPU_CHECK_FULL:-0}" = 1 ] && sel="(cuda or triton or mixed_devices) and not emulated"
[ -z "$(out_of_time 60)" ] && timeout "$(left 120)" "$PY" -m pytest -q --maxfail=10 -p no:cacheprovider tests/ops -k "$sel" 2>&1 | tail -15

stage "benchmarks $(out_of_time 60)"
variants="reference,cuda"; [ "${GPU_CHECK_FULL:-0}" = 1 ] && variants=""
# every op on main, vsml_step first (the longest-standing); the BLUR ops at T = 1 only to fit the budget
for op_budget in vsml_step:100 blur:90 content_read:40 mann_memory_step:40; do
  op=${op_budget%%:*}; budget=${op_budget##*:}
  [ -z "$(out_of_time 30)" ] || { echo "benchmark $op $(out_of_time 30)"; continue; }
  METALEARN_BENCH_VARIANTS="$variants" METALEARN_BENCH_BLUR_T=1 timeout "$(left "$budget")" "$PY" -m benchmarks.run \
    --op "$op" --device cuda --json "$OUT/bench_${op}_cuda.json" 2>&1 | grep -v "^\[\|Warning"
done

stage "compute-sanitizer memcheck (small cases of every op, forward + backward) $(out_of_time 30)"
cat >"$OUT/memcheck_case.py" <<'PYEOF'
import torch
from metalearn_ext.ops.vsml_step import vsml_step
from metalearn_ext.ops.vsml_step.inputs import make_inputs
for N in (8, 16, 32):
    for per_copy in (False, True):
        x = [t.requires_grad_(True) for t in make_inputs(3, 7, 5, N, 3, per_copy=per_copy, device="cuda")]
        out = vsml_step(*x, ticks=3, backend="cuda")
        sum(o.sum() for o in out).backward()
print("memcheck: vsml_step ran")
from metalearn_ext.ops import blur_hebbian, blur_propagate, content_read, mann_memory_step
from metalearn_ext.ops.blur_propagate.inputs import hebbian_inputs, propagate_inputs
from metalearn_ext.ops.content_read import inputs as read_inputs
from metalearn_ext.ops.mann_memory_step import inputs as step_inputs
def grad_all(out, x):
    out = out if isinstance(out, (tuple, list)) else (out,)
    sum(o.float().sum() for o in out).backward()
for k in (2, 3):
    for transpose in (False, True):
        x = [t.requires_grad_(True) for t in propagate_inputs(2, 3, 5, 7, k, transpose=transpose, device="cuda")]
        grad_all(blur_propagate(*x, transpose=transpose, backend="cuda"), x)
    x = [t.requires_grad_(True) for t in hebbian_inputs(2, 3, 5, 7, k, device="cuda")]
    grad_all(blur_hebbian(*x, normalize=True, backend="cuda"), x)
print("memcheck: blur ops ran")
x = [t.requires_grad_(True) if t is not None else t for t in read_inputs.make_inputs(3, 2, 9, 5, device="cuda")]
grad_all(content_read(*x, backend="cuda"), x)
x = [t.requires_grad_(True) for t in step_inputs.make_inputs(3, 2, 9, 5, device="cuda")]
grad_all(mann_memory_step(*x, 0.95, backend="cuda"), x)
torch.cuda.synchronize(); print("memcheck case ran")
PYEOF
if [ -z "$(out_of_time 30)" ]; then
  timeout "$(left 90)" compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" "$OUT/memcheck_case.py" \
    >"$OUT/memcheck.log" 2>&1
  echo "memcheck exit code $?"; tail -4 "$OUT/memcheck.log"
fi
stage "done"
} 2>&1 | tee "$OUT/gpu_check.log"
