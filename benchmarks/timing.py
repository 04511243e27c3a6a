"""Median wall time of a callable: CUDA events on GPU, torch.utils.benchmark on CPU."""
from __future__ import annotations

import statistics
from typing import Callable

import torch
import torch.utils.benchmark as tb


def median_seconds(fn: Callable[[], object], device: str, min_run_time: float = 0.5) -> float:
    """Median seconds per call after warm-up."""
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        times = []
        for _ in range(50):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)
    # torch.utils.benchmark runs on 1 thread unless told otherwise: use what torch has (all cores).
    timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median
