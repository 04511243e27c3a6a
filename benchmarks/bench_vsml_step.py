"""vsml_step: every usable backend against reference eager and reference under torch.compile.

A correctness check against the float64 reference runs first; a wrong kernel reports no speed.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch

import metalearn_ext
from benchmarks.timing import check_against, median_seconds, ratio, time_variants
from metalearn_ext.ops.vsml_step import vsml_step, vsml_step_reference
from metalearn_ext.ops.vsml_step.inputs import make_inputs

SHAPES = [(16, 64, 10, 16, 8), (1, 784, 10, 16, 8), (16, 784, 10, 16, 8), (64, 100, 32, 16, 8)]  # (T, A, B, N, M)
TICKS = 2
# Peak HBM bandwidth by product name (bytes/s), for the roofline fraction.
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.039e12, "A100": 1.555e12}


def candidates(device: str, only: list[str] | None = None) -> dict[str, Callable]:
    """name -> f(h, c, fwd_in, bwd_in, weight, bias) for every variant to time on this device
    (or only those named in `only`, e.g. from $METALEARN_BENCH_VARIANTS="reference,cuda")."""
    torch._dynamo.config.cache_size_limit = 64
    ref = functools.partial(vsml_step_reference, ticks=TICKS)
    out = {"reference": ref, "reference+compile": torch.compile(ref, dynamic=False)}
    report = metalearn_ext.backends()
    for name in ("cpp",) if device == "cpu" else ("cuda", "triton"):
        if report[name].available:
            out[name] = functools.partial(vsml_step, ticks=TICKS, backend=name)
    only = only or [v for v in os.environ.get("METALEARN_BENCH_VARIANTS", "").split(",") if v]
    return {k: v for k, v in out.items() if not only or k in only}


def check(fn, inputs, upstream) -> str | None:
    """None if fn's outputs and gradients match the float64 reference, else what differs."""
    names = ["h", "c", "fwd_mean", "bwd_mean"] + [f"grad {n}" for n in ("h", "c", "fwd_in", "bwd_in", "weight", "bias")]
    return check_against(fn, functools.partial(vsml_step_reference, ticks=TICKS), inputs, upstream, names=names)


def peak_bandwidth(device: str) -> tuple[float | None, float | None]:
    """(spec peak from the product name, measured device-to-device copy bandwidth), bytes/s."""
    if device != "cuda":
        return None, None
    name = torch.cuda.get_device_name()
    spec = next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)
    x = torch.empty(256 * 2**20, device="cuda")  # 1 GiB
    t = median_seconds(lambda: x.clone(), "cuda")
    return spec, 2 * x.numel() * 4 / t


def io_bytes(T, A, B, N, M, per_copy=False) -> int:
    """Bytes the op must move: h, c read and written once, messages and parameters read, means written."""
    w = (T if per_copy else 1) * 4 * N * (2 * M + N + 1)
    return 4 * (4 * T * A * B * N + T * A * M + T * B * M + w + T * B * N + T * A * N)


def run(device: str = "cpu", shapes=SHAPES, extra: dict[str, Callable] | None = None) -> list[dict]:
    """One row per (shape, variant, mode) with the median time, synapse-ticks/s and the speedups."""
    rows = []
    spec_bw, copy_bw = peak_bandwidth(device)
    variants = {**candidates(device), **(extra or {})}
    for shape in shapes:
        T, A, B, N, M = shape
        inputs = make_inputs(*shape, device=device)
        g = torch.Generator().manual_seed(1)
        upstream = [torch.randn(s, generator=g).to(device) for s in [(T, A, B, N)] * 2 + [(T, B, N), (T, A, N)]]

        def bandwidth(row: dict, mode: str, seconds: float, shape=shape) -> None:
            if mode == "fwd" and spec_bw:
                bw = io_bytes(*shape) / seconds
                row.update(gbytes_per_s=bw / 1e9, roofline_fraction=bw / spec_bw, copy_bw_fraction=bw / copy_bw)

        rows += time_variants(variants, lambda name, fn: check(fn, inputs, upstream), inputs, upstream, device,
                              row={"op": "vsml_step", "shape": list(shape), "ticks": TICKS},
                              work={"synapse_ticks_per_s": T * A * B * TICKS}, extra=bandwidth)
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'shape (T,A,B,N,M)':<22} {'backend':<18} {'mode':<8} {'median ms':>10} {'Msyn-tick/s':>12} " \
           f"{'x ref':>7} {'x compiled':>10} {'roofline':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r["ok"]:
            lines.append(f"{str(tuple(r['shape'])):<22} {r['backend']:<18} {r['mode']:<8} WRONG: {r['error']}")
            continue
        roof = f"{r['roofline_fraction']:.0%}" if "roofline_fraction" in r else "-"
        lines.append(
            f"{str(tuple(r['shape'])):<22} {r['backend']:<18} {r['mode']:<8} {r['median_ms']:>10.3f} "
            f"{r['synapse_ticks_per_s'] / 1e6:>12.1f} {ratio(r, 'reference', 7)} "
            f"{ratio(r, 'reference+compile', 10)} {roof:>9}")
    return "\n".join(lines)


BENCHES = {"vsml_step": run}
FORMATTERS = {"vsml_step": format_rows}
