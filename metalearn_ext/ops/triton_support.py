"""Whether Triton kernels can run here, for every op's triton.py: a guarded import and a device check.

This module imports without triton (`triton` and `tl` are then None). The kernels of an op's
triton.py are built when that file is imported, so whether they run under the interpreter is fixed
by TRITON_INTERPRET at the moment triton is first imported.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl

    _ERROR = ""
except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising anything else
    triton = None
    tl = None
    _ERROR = f"triton cannot be imported ({type(exc).__name__}: {exc}); install it with `pip install triton`"

INTERPRETED = triton is not None and os.environ.get("TRITON_INTERPRET", "0") == "1"


def supports(device: torch.device | str) -> tuple[bool, str]:
    """Whether Triton kernels can run on tensors of ``device``; the reason when not."""
    if triton is None:
        return False, _ERROR
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA tensors need a CUDA GPU, and torch.cuda.is_available() is False"
        return True, ""
    if device.type == "cpu":
        if not INTERPRETED:
            return False, ("Triton runs on CPU tensors only under its interpreter: set TRITON_INTERPRET=1 "
                           "before triton and metalearn_ext are imported")
        return True, ""
    return False, f"Triton kernels do not run on {device.type} tensors"


def available() -> tuple[bool, str]:
    """Whether Triton can run here at all: on a CUDA GPU, or on CPU under TRITON_INTERPRET=1."""
    if triton is not None and torch.cuda.is_available():
        return True, ""
    return supports("cpu")
