"""Which kernel backends are built and usable here, and why not."""
from __future__ import annotations

import os
from functools import lru_cache
from typing import NamedTuple

import torch

BACKENDS = ("reference", "cpp", "cuda", "triton")
_INSTALL_HINT = "build the extension with `pip install --no-build-isolation -e .` (see README: Building)"


class BackendStatus(NamedTuple):
    available: bool
    reason: str


@lru_cache(maxsize=None)
def _load_extension() -> tuple[bool, str]:
    try:
        from metalearn_ext import _C  # noqa: F401  (loading registers the ops)
    except ImportError as e:  # not built, or built against another torch
        return False, f"metalearn_ext._C could not be imported ({e}); {_INSTALL_HINT}"
    from metalearn_ext.ops.vsml_step import cpp

    cpp.register()
    return True, "built"


def extension_loaded() -> bool:
    return _load_extension()[0]


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"metalearn_ext::{op}", key)


@torch.compiler.assume_constant_result
def available(name: str) -> bool:
    """Whether a backend is usable here; a constant to torch.compile, so backend choice never breaks a graph."""
    return status(name).available


def status(name: str) -> BackendStatus:
    """Availability of one backend ("reference", "cpp", "cuda" or "triton") on this machine."""
    if name == "reference":
        return BackendStatus(True, "plain PyTorch, always available")
    if name in ("cpp", "cuda"):
        ok, why = _load_extension()
        if not ok:
            return BackendStatus(False, why)
        key = "CPU" if name == "cpp" else "CUDA"
        if not _has_kernel("vsml_step", key):
            return BackendStatus(
                False,
                "the extension was built without CUDA kernels (torch is a CPU build, nvcc was not found, or "
                "METALEARN_SKIP_CUDA_BUILD=1; "
                "set CUDA_HOME or METALEARN_FORCE_CUDA=1 and rebuild)"
                if name == "cuda"
                else f"the extension has no CPU kernels; {_INSTALL_HINT}",
            )
        if name == "cuda" and not torch.cuda.is_available():
            return BackendStatus(False, "CUDA kernels are built but no CUDA GPU is visible")
        return BackendStatus(True, "built")
    if name == "triton":
        from metalearn_ext.ops.vsml_step import triton as triton_backend

        ok, why = triton_backend.available()
        if not ok:
            return BackendStatus(False, why)
        if torch.cuda.is_available():
            return BackendStatus(True, "Triton on CUDA")
        if os.environ.get("TRITON_INTERPRET") == "1":
            return BackendStatus(True, "Triton interpreter on CPU (TRITON_INTERPRET=1): correct but slow")
        return BackendStatus(False, "no CUDA GPU; set TRITON_INTERPRET=1 before importing triton to run on CPU")
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def backends() -> dict[str, BackendStatus]:
    """Report which of reference / cpp / cuda / triton are built and usable here, and why not.

    >>> metalearn_ext.backends()["cpp"]
    BackendStatus(available=True, reason='built')
    """
    return {name: status(name) for name in BACKENDS}
