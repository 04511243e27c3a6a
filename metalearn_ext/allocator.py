"""glibc's malloc settings for a long CPU run: keep freed memory in the process for reuse.

By default glibc serves every block above a threshold (128 KiB, rising to at most 32 MiB) with a
fresh ``mmap`` and returns it to the kernel on ``free``, and trims the top of the heap whenever
128 KiB lie free there. A training step that allocates and frees the same large activations every
iteration then pays, each iteration, for new pages: the kernel zeroes them and faults them in.
ProtoNet's 80-way episode (320 images, 64 × 28 × 28 activations of 64 MiB) spent 12.7 of a 60-step
run's 34 CPU seconds in the kernel that way, and a training iteration on two threads takes 0.129 s
with this module's settings against 0.243 s without (docs/BENCHMARKS.md,
``python -m benchmarks.run --op protonet_train``).

:func:`keep_freed_memory` turns both off, so freed blocks are reused: the process keeps its peak
heap for the rest of its life (what a training or evaluation process wants) instead of returning
memory it will ask for again a moment later. It changes settings of the whole process, so the
library never calls it on import: the ``metalearn`` command calls it for its runs, and a user's own
training loop may call it too. ``METALEARN_MALLOC=system`` leaves glibc's settings as they are.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "keeps_freed_memory"]

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int: trim only when 2 GiB lie free at the top of the heap

_applied = False


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep freed memory for reuse (glibc only).

    Returns True if the settings are in effect (now or from an earlier call); False where they do
    not apply: not Linux, not glibc (musl has no ``mallopt``), ``mallopt`` refused, or
    ``METALEARN_MALLOC=system`` in the environment. Never raises.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("METALEARN_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
    return _applied


def keeps_freed_memory() -> bool:
    """True once :func:`keep_freed_memory` has applied its settings in this process."""
    return _applied
