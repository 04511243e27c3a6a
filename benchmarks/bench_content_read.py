"""content_read and mann_memory_step: every usable backend against reference eager and reference under
torch.compile, at MANN's sizes (B, H, S, W).

A correctness check against the float64 reference runs first; a wrong kernel reports no speed. The
natural unit is head-slot addressings per second (B·H·S cosines, softmax entries and read terms).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

import metalearn_ext
from benchmarks.timing import check_against, ratio, time_variants
from metalearn_ext.ops.content_read import content_read, content_read_reference
from metalearn_ext.ops.content_read import inputs as read_inputs
from metalearn_ext.ops.mann_memory_step import inputs as step_inputs
from metalearn_ext.ops.mann_memory_step import (
    mann_memory_step,
    mann_memory_step_reference,
)

SHAPES = [(16, 4, 128, 40), (256, 4, 128, 40), (16, 8, 1024, 64)]  # (B, H, S, W); the paper's first
GAMMA = 0.95


def _variants(device: str, reference: Callable, compiled_op: Callable) -> dict[str, Callable]:
    """name -> callable for every variant to time on this device ($METALEARN_BENCH_VARIANTS limits them).
    Triton is timed on GPU only: on CPU it runs in its interpreter, which says nothing about speed."""
    torch._dynamo.config.cache_size_limit = 64
    out = {"reference": reference, "reference+compile": torch.compile(reference, dynamic=False)}
    report = metalearn_ext.backends()
    for name in ("cpp",) if device == "cpu" else ("cuda", "triton"):
        if report[name].available:
            out[name] = functools.partial(compiled_op, backend=name)
    only = [v for v in os.environ.get("METALEARN_BENCH_VARIANTS", "").split(",") if v]
    return {k: v for k, v in out.items() if not only or k in only}


def _run(op: str, device: str, shapes, reference: Callable, compiled_op: Callable, make_inputs: Callable,
         make_upstream: Callable) -> list[dict]:
    rows = []
    variants = _variants(device, reference, compiled_op)
    for shape in shapes:
        B, H, S, _ = shape
        inputs, upstream = make_inputs(*shape, device=device), make_upstream(*shape, device=device)
        rows += time_variants(variants, lambda name, fn: check_against(fn, reference, inputs, upstream), inputs,
                              upstream, device, row={"op": op, "shape": list(shape)},
                              work={"addressings_per_s": B * H * S})
    return rows


def run_content_read(device: str = "cpu", shapes=SHAPES) -> list[dict]:
    """content_read with beta (B, H) given, as MANN-style models with a key strength call it."""
    return _run("content_read", device, shapes, content_read_reference, content_read, read_inputs.make_inputs,
                read_inputs.make_upstream)


def run_mann_memory_step(device: str = "cpu", shapes=SHAPES) -> list[dict]:
    return _run("mann_memory_step", device, shapes, functools.partial(mann_memory_step_reference, gamma=GAMMA),
                functools.partial(mann_memory_step, gamma=GAMMA), step_inputs.make_inputs, step_inputs.make_upstream)


def format_rows(rows: list[dict]) -> str:
    head = (f"{'shape (B,H,S,W)':<20} {'backend':<18} {'mode':<8} {'median ms':>10} {'M addr/s':>9} "
            f"{'x ref':>7} {'x compiled':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r["ok"]:
            lines.append(f"{tuple(r['shape'])!s:<20} {r['backend']:<18} {r['mode']:<8} WRONG: {r['error']}")
            continue
        lines.append(f"{tuple(r['shape'])!s:<20} {r['backend']:<18} {r['mode']:<8} {r['median_ms']:>10.3f} "
                     f"{r['addressings_per_s'] / 1e6:>9.1f} {ratio(r, 'reference', 7)} "
                     f"{ratio(r, 'reference+compile', 10)}")
    return "\n".join(lines)


BENCHES = {"content_read": run_content_read, "mann_memory_step": run_mann_memory_step}
FORMATTERS = {"content_read": format_rows, "mann_memory_step": format_rows}
