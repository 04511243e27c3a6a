"""BLUR's ops (blur_propagate forward and transposed, blur_hebbian): every usable backend against the reference
eager and the reference under torch.compile, side by side.

A correctness check against the float64 reference runs first; a wrong kernel reports no speed.
$METALEARN_BENCH_BLUR_T (e.g. "1") and $METALEARN_BENCH_BLUR_MODES (e.g. "fwd") narrow the grid, so that
a slow machine can run it in parts; $METALEARN_BENCH_VARIANTS narrows the variants as in bench_vsml_step.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch

import metalearn_ext
from benchmarks.timing import check_against, ratio, time_variants
from metalearn_ext.ops.blur_hebbian import blur_hebbian, blur_hebbian_reference
from metalearn_ext.ops.blur_propagate import blur_propagate, blur_propagate_reference
from metalearn_ext.ops.blur_propagate.inputs import hebbian_inputs, propagate_inputs

BATCHES = (1, 8, 128)
LAYERS = ((64, 20, 2), (784, 512, 4), (512, 10, 8))  # (I, J, k)
COPIES = (1, 16)
OPS = ("propagate", "propagate_t", "hebbian")
MODES = ("fwd", "fwd+bwd")


def _env_list(name: str, default: tuple, cast=str) -> tuple:
    value = os.environ.get(name, "")
    return tuple(cast(v) for v in value.split(",") if v) or default


def _reference(op: str) -> Callable:
    if op == "hebbian":
        return functools.partial(blur_hebbian_reference, normalize=True, oja=False)
    return functools.partial(blur_propagate_reference, transpose=op == "propagate_t")


def _kernel(op: str, backend: str) -> Callable:
    if op == "hebbian":
        return functools.partial(blur_hebbian, normalize=True, oja=False, backend=backend)
    return functools.partial(blur_propagate, transpose=op == "propagate_t", backend=backend)


def candidates(op: str, device: str) -> dict[str, Callable]:
    """name -> f(*inputs) for every variant to time on this device."""
    torch._dynamo.config.cache_size_limit = 256
    out = {"reference": _reference(op), "reference+compile": torch.compile(_reference(op), dynamic=False)}
    report = metalearn_ext.backends()
    for name in ("cpp",) if device == "cpu" else ("cuda", "triton"):
        if report[name].available:
            out[name] = _kernel(op, name)
    only = [v for v in os.environ.get("METALEARN_BENCH_VARIANTS", "").split(",") if v]
    return {k: v for k, v in out.items() if not only or k in only}


def make(op: str, T: int, B: int, I: int, J: int, k: int, device: str) -> tuple[list, list]:
    """(inputs, upstream gradient)."""
    if op == "hebbian":
        inputs = hebbian_inputs(T, B, I, J, k, device=device)
        out_shape = (T, I, J, k)
    else:
        inputs = propagate_inputs(T, B, I, J, k, transpose=op == "propagate_t", device=device)
        out_shape = (T, B, I if op == "propagate_t" else J, k)
    g = torch.Generator().manual_seed(1)
    return inputs, [torch.randn(out_shape, generator=g).to(device)]


def check(fn: Callable, reference: Callable, inputs: list, upstream: list) -> str | None:
    """None if fn's output and gradients match the float64 reference, else what differs."""
    return check_against(lambda *x: [fn(*x)], lambda *x: [reference(*x)], inputs, upstream,
                         names=["output"] + [f"gradient {i}" for i in range(len(inputs))])


def flops(op: str, T: int, B: int, I: int, J: int, k: int) -> int:
    """Multiply-adds ×2 of the products alone (the k×k mixes are extra)."""
    return 2 * T * B * I * J * k


def run(device: str = "cpu") -> list[dict]:
    """One row per (op, shape, variant, mode) with the median time, GFLOP/s and the speedups."""
    rows = []
    copies = _env_list("METALEARN_BENCH_BLUR_T", COPIES, int)
    modes = _env_list("METALEARN_BENCH_BLUR_MODES", MODES)
    for op in _env_list("METALEARN_BENCH_BLUR_OPS", OPS):
        variants = candidates(op, device)
        for T in copies:
            for B in BATCHES:
                for I, J, k in LAYERS:
                    shape = (T, B, I, J, k)
                    inputs, upstream = make(op, *shape, device)
                    wrapped = {name: (lambda *x, fn=fn: [fn(*x)]) for name, fn in variants.items()}  # a list out
                    rows += time_variants(
                        wrapped, lambda name, _: check(variants[name], _reference(op), inputs, upstream), inputs,
                        upstream, device, row={"op": f"blur_{op}", "shape": list(shape)},
                        work={"gflops": flops(op, *shape) / 1e9}, modes=modes, min_run_time=0.2)
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (f"{'op':<18} {'shape (T,B,I,J,k)':<22} {'backend':<18} {'mode':<8} {'median ms':>10} {'GFLOP/s':>8} "
            f"{'x ref':>7} {'x compiled':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        where = f"{r['op']:<18} {str(tuple(r['shape'])):<22} {r['backend']:<18} {r['mode']:<8}"
        if not r["ok"]:
            lines.append(f"{where} WRONG: {r['error']}")
            continue
        lines.append(f"{where} {r['median_ms']:>10.3f} {r['gflops']:>8.2f} {ratio(r, 'reference', 7)} "
                     f"{ratio(r, 'reference+compile', 10)}")
    return "\n".join(lines)


BENCHES = {"blur": run}
FORMATTERS = {"blur": format_rows}
