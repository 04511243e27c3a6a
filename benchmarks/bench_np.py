"""Training throughput of the neural processes on padded GP batches (memory_np.md §3: 64 curves,
3-50 context points, up to 100 targets padded to 50 / 100): one iteration = loss + backward +
Adam step, float32. Paper sizes: encoder [128]·4, decoder [128, 128], z 128, 8 heads.

* ``np_train``: CNP, latent NP, ANP; rows: ``eager`` (every padded slot, one thread: the baseline
  of ``x eager``), ``eager`` on every thread, ``packed`` (the default: the pointwise MLPs and the
  training decoder on the real points only, one thread and every thread).
* ``np_train_compile``: the same models' ``eager`` row beside ``compile`` (torch.compile of the
  padded loss, whose shapes are static in training; one thread). Apart, since compiling takes
  minutes on a small CPU.
* ``gp_sampling``: drawing the batch itself: one Cholesky per curve (``draw_items`` around
  ``sample_gp_curves(1)``) against the task's one batched Cholesky for the same per-curve seeds.

Correctness first (the runner of bench_fewshot.py): in float64, from the same weights, batch and
draws of z, a row's loss and gradients must equal the first row's within 1e-6 relative, else it
reports ok=False and no speed; the sampling rows must give identical batches.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from benchmarks.bench_fewshot import Variant, _run_rows
from metalearn_ext.data import sample_gp_curves
from metalearn_ext.nn import ANP, CNP, LatentNP
from metalearn_ext.tasks import build_task
from metalearn_ext.tasks.base import draw_items
from metalearn_ext.tasks.regression import GP_X_RANGE, GPTaskConfig

CURVES = 64
MODELS = {"cnp": lambda: CNP(1, 1), "np": lambda: LatentNP(1, 1), "anp": lambda: ANP(1, 1)}
SAMPLING_REPEATS = 15  # interleaved, so both variants see the same machine load


def _batches(device: str) -> dict[torch.dtype, tuple]:
    b = build_task(GPTaskConfig()).sample(range(CURVES), seed=0, step=0)
    out = {}
    for dt in (torch.float32, torch.float64):
        out[dt] = tuple(t.to(device, dt) for t in (b.context_x, b.context_y, b.target_x, b.target_y)) + (
            b.context_mask.to(device), b.target_mask.to(device))
    return out


def _loss(model: nn.Module, batch: tuple) -> torch.Tensor:
    torch.manual_seed(1)  # the same draws of z in every row
    return model.loss(*batch)[0]


def _rows(op: str, device: str, variants: list[Variant]) -> list[dict]:
    batches = _batches(device)
    rows = []
    for name, make in MODELS.items():
        torch.manual_seed(0)
        base = make().to(device)

        def build(v: Variant, dtype: torch.dtype, base=base) -> nn.Module:
            model = copy.deepcopy(base).to(dtype).set_packed(v.name.startswith("packed"))
            if v.compile:
                model.loss = torch.compile(model.loss)
            return model

        rows += _run_rows(op, device, variants, build, _loss, lambda m: list(m.parameters()), batches,
                          dict(model=name, setting=f"GP, {CURVES} curves"))
    return rows


def np_train(device: str = "cpu") -> list[dict]:
    """Rows: op, model, setting, variant, device, threads, ok, error[, first_call_s, median_step_s,
    iters_per_s, speedup_vs_eager]."""
    return _rows("np_train", device, [Variant("eager"), Variant("eager", all_threads=True), Variant("packed"),
                                      Variant("packed", all_threads=True)])


def np_train_compile(device: str = "cpu") -> list[dict]:
    """Rows as np_train's: eager and compile."""
    import torch._inductor.config as inductor

    inductor.fallback_random = True  # compiled rsample draws eager's random numbers (the float64 check)
    return _rows("np_train_compile", device, [Variant("eager"), Variant("compile", compile=True)])


def gp_sampling(device: str = "cpu") -> list[dict]:
    """Rows: op, variant, setting, ok, error[, median_s, batches_per_s, speedup_vs_per_curve]."""
    cfg = GPTaskConfig()
    task = build_task(cfg)

    def per_curve():
        return draw_items(range(CURVES), seed=0, step=0, split="train", draw=lambda g: sample_gp_curves(
            1, min_context=cfg.min_context, max_context=cfg.max_context, min_extra_target=cfg.min_extra_target,
            max_extra_target=cfg.max_extra_target, x_range=GP_X_RANGE, generator=g))

    def batched():
        return task.sample(range(CURVES), seed=0, step=0)

    ref, got = per_curve(), batched()
    same = all(torch.equal(getattr(ref, f), getattr(got, f)) for f in ("context_x", "context_y", "target_x",
                                                                        "target_y", "context_mask", "target_mask"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    variants = {"per-curve Cholesky": per_curve, "batched Cholesky": batched}
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(SAMPLING_REPEATS if same else 0):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    rows = []
    for name in variants:
        row = dict(op="gp_sampling", variant=name, setting=f"{CURVES} curves of <= 100 points", device="cpu",
                   threads=1, ok=same, error=None if same else "the batched draw differs from the per-curve one")
        if same:
            row.update(median_s=statistics.median(times[name]), batches_per_s=1.0 / statistics.median(times[name]))
        rows.append(row)
    if same:
        for r in rows:
            r["speedup_vs_per_curve"] = rows[0]["median_s"] / r["median_s"]
    return rows


def format_train(rows: list[dict]) -> str:
    lines = [f"{'model':<5} {'variant':<8} {'thr':>3} {'s/iter':>7} {'iter/s':>7} {'x eager':>7} {'1st call s':>10}"]
    for r in rows:
        head = f"{r['model']:<5} {r['variant']:<8} {r['threads']:>3}"
        if not r["ok"]:
            lines.append(f"{head} WRONG or failed: {r['error']}")
            continue
        speedup = f"{r['speedup_vs_eager']:>7.2f}" if "speedup_vs_eager" in r else f"{'-':>7}"
        lines.append(f"{head} {r['median_step_s']:>7.3f} {r['iters_per_s']:>7.2f} {speedup} {r['first_call_s']:>10.1f}")
    return "\n".join(lines)


def format_sampling(rows: list[dict]) -> str:
    lines = [f"{'variant':<20} {'ms/batch':>8} {'x per-curve':>11}"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"{r['variant']:<20} WRONG: {r['error']}")
            continue
        lines.append(f"{r['variant']:<20} {1e3 * r['median_s']:>8.1f} {r['speedup_vs_per_curve']:>11.2f}")
    return "\n".join(lines)


BENCHES = {"np_train": np_train, "np_train_compile": np_train_compile, "gp_sampling": gp_sampling}
FORMATTERS = {"np_train": format_train, "np_train_compile": format_train, "gp_sampling": format_sampling}
