"""Which kernel backends are built and usable here, and why not; loading the extension.

Loading `metalearn_ext._C` defines the schemas of every op (csrc/ops.cpp) and their CPU/CUDA kernels;
after it, every registered op gets its fakes and autograd. `import metalearn_ext` does this once.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch

from metalearn_ext.ops import autograd, registry

BACKENDS = ("reference", "cpp", "cuda", "triton")
DISPATCH_KEYS = {"cpp": "CPU", "cuda": "CUDA"}  # the compiled backends' kernels, per torch dispatch key
_INSTALL_HINT = "build the extension with `pip install --no-build-isolation -e .` (see README: Building)"
_CUDA_HINT = ("torch is a CPU build, nvcc was not found, or METALEARN_SKIP_CUDA_BUILD=1; "
              "set CUDA_HOME or METALEARN_FORCE_CUDA=1 and rebuild")


class BackendStatus(NamedTuple):
    available: bool
    reason: str


def _defined(op: str) -> bool:
    return hasattr(torch.ops.metalearn_ext, op)


@lru_cache(maxsize=None)
def load_extension() -> tuple[bool, str]:
    """Imports metalearn_ext._C and registers fakes and autograd of every op it defines; (loaded, why not)."""
    try:
        from metalearn_ext import _C  # noqa: F401  (loading registers the schemas and kernels)
    except ImportError as e:  # not built, or built against another torch
        return False, f"metalearn_ext._C could not be imported ({e}); {_INSTALL_HINT}"
    for spec in registry.ops():
        if not _defined(spec.name):  # an op newer than the build has no schema: status() says so
            continue
        if spec.register_compiled is not None:
            spec.register_compiled()
        elif spec.cpp_autograd:
            autograd.register_double_backward(spec.qualname, f"{spec.qualname}_backward", spec.fake, spec.reference)
        else:
            autograd.register(spec.qualname, f"{spec.qualname}_backward", spec.fake, spec.reference)
    return True, "built"


def _has_kernel(op: str, key: str) -> bool:
    return _defined(op) and torch._C._dispatch_has_kernel_for_dispatch_key(f"metalearn_ext::{op}", key)


def _compiled_status(name: str, ops: list[str]) -> BackendStatus:
    ok, why = load_extension()
    if not ok:
        return BackendStatus(False, why)
    missing = [op for op in ops if not _has_kernel(op, DISPATCH_KEYS[name])]
    if missing and name == "cuda":
        return BackendStatus(False, f"the extension was built without CUDA kernels for {', '.join(missing)} "
                                    f"({_CUDA_HINT})")
    if missing:
        return BackendStatus(False, f"the extension has no CPU kernels for {', '.join(missing)} (built from "
                                    f"older sources?); {_INSTALL_HINT}")
    if name == "cuda" and not torch.cuda.is_available():
        return BackendStatus(False, "CUDA kernels are built but no CUDA GPU is visible")
    return BackendStatus(True, "built")


def _triton_status() -> BackendStatus:
    from metalearn_ext.ops import triton_support  # imports triton: only when asked about it

    ok, why = triton_support.available()
    if not ok:
        return BackendStatus(False, why)
    if torch.cuda.is_available():
        return BackendStatus(True, "Triton on CUDA")
    return BackendStatus(True, "Triton interpreter on CPU (TRITON_INTERPRET=1): correct but slow")


def status(name: str, op: str | None = None) -> BackendStatus:
    """Availability of one backend ("reference", "cpp", "cuda" or "triton") here: for `op`, or for
    every registered op that has that backend."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "reference":
        return BackendStatus(True, "plain PyTorch, always available")
    if op is not None and name not in registry.get(op).kernels:
        return BackendStatus(False, f"{op} has no {name} kernel")
    if name == "triton":
        return _triton_status()
    ops = [op] if op is not None else [spec.name for spec in registry.ops() if name in spec.kernels]
    return _compiled_status(name, ops)


@torch.compiler.assume_constant_result
def available(name: str, op: str | None = None) -> bool:
    """Whether a backend is usable here (for `op`); a constant to torch.compile, so backend choice never
    breaks a graph."""
    return status(name, op).available


@torch.compiler.assume_constant_result
def runs_on(name: str, device_type: str) -> str:
    """Why backend `name` cannot take tensors on `device_type` ("cpu", "cuda", ...), or "" if it can."""
    if name == "cpp" and device_type != "cpu":
        return f"the cpp backend runs on CPU tensors, got {device_type} tensors"
    if name == "cuda" and device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got {device_type} tensors"
    if name == "triton":
        from metalearn_ext.ops import triton_support

        return triton_support.supports(device_type)[1]
    return ""


def backends() -> dict[str, BackendStatus]:
    """Report which of reference / cpp / cuda / triton are built and usable here, and why not.

    >>> metalearn_ext.backends()["cpp"]
    BackendStatus(available=True, reason='built')
    """
    return {name: status(name) for name in BACKENDS}
