"""Builds metalearn_ext._C: the C++ CPU kernels always, the CUDA kernels where torch and nvcc allow.

Environment:
  METALEARN_FORCE_CUDA=1       build the CUDA sources even with no GPU visible (needs nvcc / CUDA_HOME)
  METALEARN_SKIP_CUDA_BUILD=1  build the CPU kernels only
  TORCH_CUDA_ARCH_LIST         CUDA archs; default: the visible GPU's, else "8.0;9.0"
  DEBUG=1                      -O0 -g; MAX_JOBS and NVCC_THREADS as usual
  CXX                          the C++ compiler, and nvcc's host compiler (-ccbin) too
Sources: every csrc/*.cpp, csrc/cpu/*.cpp and csrc/cuda/*.cu (the .cu files in CUDA builds only).
Build against the installed torch: pip install --no-build-isolation -e .
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _sources() -> tuple[list[str], list[str]]:
    """(C++ sources, CUDA sources), discovered: csrc/*.cpp, csrc/cpu/*.cpp and csrc/cuda/*.cu (as in CMakeLists.txt)."""
    def glob(pattern: str) -> list[str]:
        return sorted(str(p.relative_to(ROOT)) for p in CSRC.glob(pattern))

    return glob("*.cpp") + glob("cpu/*.cpp"), glob("cuda/*.cu")


def _host_compiler() -> str:
    """The compiler of the .cpp files (torch's ninja build: $CXX, else c++), for nvcc's -ccbin too.

    torch passes nvcc `-ccbin $CC` only, so with CXX set and CC unset the C++ files and the CUDA files'
    host code would be built by two compilers (and their two runtimes) in one library.
    """
    from torch.utils.cpp_extension import get_cxx_compiler

    cxx = get_cxx_compiler()
    return shutil.which(cxx) or cxx


def _want_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if _flag("METALEARN_SKIP_CUDA_BUILD"):
        return False
    if _flag("METALEARN_FORCE_CUDA"):
        if torch.version.cuda is None or CUDA_HOME is None:
            raise RuntimeError(
                "METALEARN_FORCE_CUDA=1 but "
                + ("the installed torch is a CPU build" if torch.version.cuda is None else "nvcc was not found")
                + "; install a CUDA build of torch and set CUDA_HOME (e.g. /usr/local/cuda)"
            )
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def _cuda_include_dirs(cuda_home: str) -> list[str]:
    """Where CUDA_HOME lacks a library header that torch's CUDA headers include (cusparse.h on a bare
    nvcc install), take it from the nvidia-* wheels that came with torch."""
    if (Path(cuda_home) / "include" / "cusparse.h").exists():
        return []
    try:
        import nvidia
    except ImportError:
        return []
    found = {str(h.parent) for base in nvidia.__path__ for h in Path(base).glob("*/include/cusparse.h")}
    return sorted(found)


def extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    debug = _flag("DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = [*opt, "-fopenmp", "-Wno-psabi"]  # torch adds the C++ standard it needs
    cpp_sources, cuda_sources = _sources()
    common = dict(include_dirs=[str(CSRC)], extra_link_args=["-fopenmp"])
    if not _want_cuda():
        return [CppExtension("metalearn_ext._C", cpp_sources, extra_compile_args={"cxx": cxx}, **common)]
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    host = _host_compiler()
    print(f"metalearn_ext: C++ compiler and nvcc host compiler: {host}")
    nvcc = [*opt, "--expt-relaxed-constexpr", "-lineinfo", "-ccbin", host]
    if os.environ.get("NVCC_THREADS"):
        nvcc += ["--threads", os.environ["NVCC_THREADS"]]
    common["include_dirs"] += _cuda_include_dirs(CUDA_HOME)
    return [
        CUDAExtension(
            "metalearn_ext._C",
            cpp_sources + cuda_sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            **common,
        )
    ]


def main() -> None:
    from torch.utils.cpp_extension import BuildExtension

    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})


if __name__ == "__main__":
    main()
