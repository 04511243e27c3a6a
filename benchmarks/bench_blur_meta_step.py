"""One BLUR meta-step at the quick config's shape (configs/blur/quick.yaml: 64 → 20 → 5, k = 2, per-layer
genome, learned initial scale; T = 8 tasks, batches of 16, U = 10 learning steps, a query batch of 64): initial
synapses, the unroll, the query cross-entropy after it and its gradient w.r.t. every meta-parameter, float32,
on one thread. Variants side by side: the reference eager, the reference under torch.compile, the cpp ops one
op at a time (fused=False) and the fused learning step (one blur_step call per step, fused=True); the fused one
again on all the process's threads (torch.get_num_threads(), e.g. 2 on a 2-core CPU) when that is more than one:
its kernels split the T copies over the threads.

Correctness first: each variant's loss and meta-gradients (float32) must match the float64 reference within
1e-4 (relative), else its row reports ok=False and no speed. Inputs are random (speed does not depend on
them), so no data set is needed. $METALEARN_BENCH_VARIANTS (e.g. "cpp,cpp fused") narrows the variants.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F
from torch import Tensor

import metalearn_ext
from benchmarks.timing import median_seconds
from metalearn_ext.nn import BLUR

SIZES, STATES, T, BATCH, UNROLL, QUERY = (64, 20, 5), 2, 8, 16, 10, 64
RTOL = 1e-4
VARIANTS = ("reference", "reference+compile", "cpp", "cpp fused")
TARGET_MS, TARGET_X_COMPILED = 2.0, 3.0  # the issue's targets for the fused meta-step


def _model(backend: str, fused: bool, dtype: torch.dtype) -> BLUR:
    torch.manual_seed(0)
    m = BLUR(SIZES, STATES, per_layer_genome=True, learn_init_scale=True, genome_lr=0.01, genome_noise=0.01,
             logit_scale=1.0, backend=backend, fused=fused)
    return m.to(dtype)


def _data(dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)  # drawn in float32 for every dtype: the same inputs
    x = torch.randn(T, UNROLL, BATCH, SIZES[0], generator=g)
    y = torch.randint(SIZES[-1], (T, UNROLL, BATCH), generator=g)
    qx = torch.randn(T, QUERY, SIZES[0], generator=g)
    qy = torch.randint(SIZES[-1], (T, QUERY), generator=g)
    return x.to(dtype), y, qx.to(dtype), qy


def meta_step_fn(model: BLUR, data: tuple, compiled: bool):
    """f() -> (loss, meta-gradients): one meta-step. The initial synapses are drawn eagerly (generators are
    no graph input); the unroll and the query loss are what torch.compile compiles."""
    x, y, qx, qy = data
    params = list(model.parameters())

    def body(w0: list[Tensor]) -> Tensor:
        w, _ = model.unroll(w0, x, y)
        return F.cross_entropy(model.predict(qx, w).transpose(1, 2), qy)

    body_fn = torch.compile(body, dynamic=False) if compiled else body

    def step() -> tuple[Tensor, list[Tensor]]:
        w0 = model.initial_state(T, [torch.Generator().manual_seed(i) for i in range(T)])
        loss = body_fn(w0)
        return loss.detach(), list(torch.autograd.grad(loss, params))

    return step


def _mismatch(got: tuple, want: tuple) -> str | None:
    (loss, grads), (ref_loss, ref_grads) = got, want
    if not abs(loss.item() - ref_loss.item()) <= RTOL * max(1.0, abs(ref_loss.item())):
        return f"loss {loss.item():.8g} vs float64 reference {ref_loss.item():.8g}"
    g = torch.cat([v.flatten().double() for v in grads])
    r = torch.cat([v.flatten() for v in ref_grads])
    err = ((g - r).norm() / r.norm().clamp_min(1e-300)).item()
    return None if err <= RTOL else f"meta-gradients differ from the float64 reference by {err:.2e} (relative norm)"


def _settings(name: str) -> tuple[str, bool, bool]:
    """(backend, fused, compiled) of a variant."""
    return {"reference": ("reference", False, False), "reference+compile": ("reference", False, True),
            "cpp": ("cpp", False, False), "cpp fused": ("cpp", True, False)}[name]


def run(device: str = "cpu") -> list[dict]:
    """Rows: op, variant, device, threads, ok, error[, median_ms, compile_s, speedup_vs_reference,
    speedup_vs_reference+compile] (speedups against the baselines on as many threads: the 1-thread rows)."""
    if device != "cpu":
        return [dict(op="blur_meta_step", variant="-", device=device, ok=True, error=None,
                     skipped="the fused step has a cpp (CPU) kernel only")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch._dynamo.config.cache_size_limit = 64
    only = [v for v in os.environ.get("METALEARN_BENCH_VARIANTS", "").split(",") if v]
    cpp_ok = metalearn_ext.backends()["cpp"]
    rows = []
    try:
        want = meta_step_fn(_model("reference", False, torch.float64), _data(torch.float64), False)()
        runs = [(name, 1) for name in VARIANTS] + ([("cpp fused", threads)] if threads > 1 else [])
        for name, n in runs:
            if only and name not in only:
                continue
            torch.set_num_threads(n)
            backend, fused, compiled = _settings(name)
            row = dict(op="blur_meta_step", variant=name, device=device, threads=n,
                       setting=f"{'-'.join(map(str, SIZES))} k={STATES} T={T} batch={BATCH} U={UNROLL}")
            rows.append(row)
            if backend == "cpp" and not cpp_ok.available:
                row.update(ok=True, error=None, skipped=cpp_ok.reason)
                continue
            step = meta_step_fn(_model(backend, fused, torch.float32), _data(torch.float32), compiled)
            start = time.perf_counter()
            got = step()  # compiles, for the compiled variant
            row["first_call_s"] = time.perf_counter() - start
            error = _mismatch(got, want)
            row.update(ok=error is None, error=error)
            if error is None:
                row["median_ms"] = 1e3 * median_seconds(step, device, min_run_time=1.0)
    finally:
        torch.set_num_threads(threads)
    base = {(r["variant"], r["threads"]): r["median_ms"] for r in rows if "median_ms" in r}
    for r in rows:
        for b in ("reference", "reference+compile"):
            if "median_ms" in r and (b, r["threads"]) in base:
                r[f"speedup_vs_{b}"] = base[b, r["threads"]] / r["median_ms"]
    return rows


def format_rows(rows: list[dict]) -> str:
    """median ms: one meta-step (torch.utils.benchmark median); first s: the first call (with compilation)."""
    head = f"{'setting':<30} {'variant':<18} {'thr':>3} {'median ms':>10} {'first s':>8} {'x ref':>7} {'x compiled':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        where = f"{r.get('setting', ''):<30} {r['variant']:<18} {r.get('threads', ''):>3}"
        if "skipped" in r:
            lines.append(f"{where} skipped: {r['skipped']}")
        elif not r["ok"]:
            lines.append(f"{where} WRONG: {r['error']}")
        else:
            ratio = lambda b: f"{r[f'speedup_vs_{b}']:.2f}" if f"speedup_vs_{b}" in r else "-"  # noqa: E731
            lines.append(f"{where} {r['median_ms']:>10.2f} {r['first_call_s']:>8.2f} {ratio('reference'):>7} "
                         f"{ratio('reference+compile'):>10}")
    fused = [r for r in rows if r["variant"] == "cpp fused" and "median_ms" in r]
    if fused:
        best = min(r["median_ms"] for r in fused)
        x = next((r["speedup_vs_reference+compile"] for r in fused if "speedup_vs_reference+compile" in r), None)
        times = ", ".join(f"{r['median_ms']:.2f} ms on {r['threads']} thread{'s' if r['threads'] > 1 else ''}"
                          for r in fused)
        lines.append(f"targets (fused): <= {TARGET_MS:g} ms: {'met' if best <= TARGET_MS else 'not met'} ({times}); "
                     f">= {TARGET_X_COMPILED:g}x the compiled reference (1 thread): "
                     + ("-" if x is None else f"{'met' if x >= TARGET_X_COMPILED else 'not met'} ({x:.2f}x)"))
    return "\n".join(lines)


BENCHES = {"blur_meta_step": run}
FORMATTERS = {"blur_meta_step": format_rows}
