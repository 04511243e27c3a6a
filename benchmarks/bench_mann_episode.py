"""mann_episode (MANN's whole recurrence in one call) against the step-by-step loop it replaces: the loop on
reference memory steps (eager, and under torch.compile) and the loop on the cpp memory step, at the paper's sizes
(LSTM 200, memory 128 × 40, 4 heads, 50 steps) for a few batch sizes.

A correctness check against the reference runs first (in float64; see `_check`); a wrong variant reports no speed. The natural unit
is episode steps per second (B·L).
"""
from __future__ import annotations

import functools
import os

import torch

import metalearn_ext
from benchmarks.timing import check_against, ratio, time_variants
from metalearn_ext.ops.mann_episode import mann_episode, mann_episode_loop, mann_episode_reference
from metalearn_ext.ops.mann_episode.inputs import make_inputs

SHAPES = [(16, 50, 200, 4, 128, 40), (1, 50, 200, 4, 128, 40), (64, 50, 200, 4, 128, 40)]  # (B, L, n, H, S, W)
GAMMA, INIT = 0.95, 1e-6


def _variants(device: str, heads: int, slots: int) -> dict:
    """name -> fn(x_gates, w_rec, w_head, b_head) ($METALEARN_BENCH_VARIANTS limits them)."""
    torch._dynamo.config.cache_size_limit = 64
    args = dict(heads=heads, slots=slots, gamma=GAMMA, memory_init=INIT)
    reference = functools.partial(mann_episode_reference, **args)
    out = {"reference": reference, "reference+compile": torch.compile(reference, dynamic=False)}
    if device == "cpu" and metalearn_ext.backends()["cpp"].available:
        out["loop of cpp steps"] = functools.partial(mann_episode_loop, **args, step_backend="cpp")
        out["cpp"] = functools.partial(mann_episode, **args, backend="cpp")
    only = [v for v in os.environ.get("METALEARN_BENCH_VARIANTS", "").split(",") if v]
    return {k: v for k, v in out.items() if not only or k in only}


def _check(name: str, fn, reference, inputs, upstream) -> str | None:
    """None if fn's outputs and gradients match the reference. In float64 (to 1e-9): in float32 a near-tie in usage
    can send one episode's write to another slot than float64 does (seen at batch 64: one episode of 64 from step 35
    on, the loop of cpp steps and the fused kernel alike), so float32 has no fixed tolerance against float64. The
    compiled reference is checked in float32 against the eager one instead (a float64 compile would cost minutes
    more)."""
    if name == "reference+compile":
        return check_against(fn, reference, inputs, upstream, reference_dtype=None)
    return check_against(fn, reference, inputs, upstream, tol=1e-9, fn_in_reference_dtype=True)


def run(device: str = "cpu", shapes=SHAPES) -> list[dict]:
    """Rows: op, shape (B, L, n, H, S, W), backend, mode (fwd / fwd+bwd), ok, error[, median_ms, steps_per_s,
    speedup_vs_reference, speedup_vs_reference+compile]."""
    rows = []
    for shape in shapes:
        B, L, n, H, S, W = shape
        inputs = [x.to(device) for x in make_inputs(*shape)]
        g = torch.Generator().manual_seed(1)
        upstream = [torch.randn(B, L, n, generator=g).to(device), torch.randn(B, L, H * W, generator=g).to(device)]
        variants = _variants(device, H, S)
        rows += time_variants(
            variants, lambda name, fn: _check(name, fn, variants["reference"], inputs, upstream)
            if name != "reference" else None, inputs, upstream, device,
            row={"op": "mann_episode", "shape": list(shape), "threads": torch.get_num_threads()},
            work={"steps_per_s": B * L})
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (f"{'shape (B,L,n,H,S,W)':<28} {'backend':<18} {'thr':>3} {'mode':<8} {'median ms':>10} {'k steps/s':>9} "
            f"{'x ref':>7} {'x compiled':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        start = f"{tuple(r['shape'])!s:<28} {r['backend']:<18} {r['threads']:>3} {r['mode']:<8}"
        if not r["ok"]:
            lines.append(f"{start} WRONG: {r['error']}")
            continue
        lines.append(f"{start} {r['median_ms']:>10.3f} {r['steps_per_s'] / 1e3:>9.2f} "
                     f"{ratio(r, 'reference', 7)} {ratio(r, 'reference+compile', 10)}")
    return "\n".join(lines)


BENCHES = {"mann_episode": run}
FORMATTERS = {"mann_episode": format_rows}
