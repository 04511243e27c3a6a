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


BASELINES = ("reference", "reference+compile")  # an op's rows are also given relative to these variants


def op_call(fn: Callable, inputs: list, upstream: list, mode: str) -> Callable[[], object]:
    """What one timed call of an op variant runs: ``fn(*inputs)`` without autograd ("fwd"), or the
    outputs and the gradients of every input for the ``upstream`` gradients of the outputs ("fwd+bwd";
    ``fn`` returns a list or tuple of outputs)."""
    from metalearn_ext.ops.testing import outputs_and_grads

    if mode == "fwd":
        def call():
            with torch.no_grad():
                return fn(*inputs)
        return call
    if mode != "fwd+bwd":
        raise ValueError(f"mode must be 'fwd' or 'fwd+bwd', got {mode!r}")
    return lambda: outputs_and_grads(fn, inputs, upstream)


def add_speedups(rows: list[dict], baselines: tuple[str, ...] = BASELINES) -> None:
    """speedup_vs_<baseline> on every timed row of one shape, once all its variants are timed."""
    base = {(r["backend"], r["mode"]): r["median_ms"] for r in rows if r["backend"] in baselines and "median_ms" in r}
    for r in rows:
        for name in baselines:
            if "median_ms" in r and (name, r["mode"]) in base:
                r[f"speedup_vs_{name}"] = base[(name, r["mode"])] / r["median_ms"]


def ratio(row: dict, baseline: str, width: int) -> str:
    """A row's speed-up over ``baseline``, right-aligned; '-' where that baseline was not run."""
    key = f"speedup_vs_{baseline}"
    return f"{row[key]:>{width}.2f}" if key in row else f"{'-':>{width}}"
