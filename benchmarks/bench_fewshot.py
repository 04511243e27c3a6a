"""Meta-training throughput of the few-shot baselines on conv-4 (64 channels, 28×28, Omniglot-sized):
one training iteration = forward + backward + Adam step, in float32.

* ``protonet_train``: ProtoNet, one 80-way 1-shot 3-query episode (``protonet/quick.yaml``'s).
* ``maml_train``: MAML, 5-way 1-shot, meta-batch 16, one query per class as in MAML's own code,
  α = 0.4, one inner step; second order and first order.

Each row is one way to run the same model: eager on every thread (first: a process that has run
on one thread and then widens its OpenMP pool runs MAML's many small ops 4-40x slower, measured
here), eager on one thread (the default of the tests; the baseline of ``x eager``), channels_last
weights and inputs,
``torch.compile`` of the encoder (ProtoNet; MAML first order only: compiled graphs cannot be
differentiated twice), vmap over tasks (MAML). The last ProtoNet rows run after
:func:`metalearn_ext.keep_freed_memory` (what the ``metalearn`` command does for its runs): glibc
then reuses freed heap memory instead of mapping fresh pages for every large activation; the rows
before them run on glibc's defaults, and each row says which (``malloc``). That setting cannot be
undone in a process, so ``--op all`` runs every later benchmark with it.

Correctness first: from the same initial weights and batch, in float64, a row's loss and
gradients must equal the first (eager) row's within 1e-6 (relative), else it reports ok=False and no
speed. float64, because float32 runs legitimately disagree by up to ~1e-2 in gradient norm:
a summation order that differs by one rounding flips near-tied max-pool and ReLU decisions
(channels_last vs eager: 7e-3 in float32, 1e-14 in float64). Images are random (speed does not
depend on them), so no data set is needed.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalearn_ext import allocator, keep_freed_memory
from metalearn_ext.nn import MAML, Conv4, ProtoNet

HIDDEN, SIZE = 64, 28
PROTO_WAYS, PROTO_SHOTS, PROTO_QUERIES = 80, 1, 3
MAML_WAYS, MAML_SHOTS, MAML_QUERIES, MAML_TASKS, MAML_LR = 5, 1, 1, 16, 0.4
WARMUP, STEPS = 1, 5  # untimed and timed iterations per row
ROW_BUDGET_S = 4.0  # a slow row stops timing after 2 iterations once it has spent this long
RTOL = 1e-6  # float64 check of loss and gradients (relative; the gradient as one vector)


@dataclass(frozen=True)
class Variant:
    name: str
    channels_last: bool = False
    compile: bool = False
    vectorize: bool = False  # MAML only
    all_threads: bool = False  # otherwise one thread (what the tests and small runs use)
    keep_heap: bool = False  # keep_freed_memory() before the row (irreversible: such rows come last)


def _episodes(e: int, n: int, k: int, q: int, device: str, seed: int = 0) -> dict[torch.dtype, tuple]:
    """The batch (support_x, support_y, query_x, query_y) in float32 and in float64."""
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(e, n * k, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    qx = torch.rand(e, n * q, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    sy = torch.arange(n).repeat_interleave(k).expand(e, -1).clone().to(device)
    qy = torch.arange(n).repeat_interleave(q).expand(e, -1).clone().to(device)
    return {dt: (sx.to(device, dt), sy, qx.to(device, dt), qy) for dt in (torch.float32, torch.float64)}


def _to_channels_last(module: nn.Module) -> nn.Module:
    """Weights in channels_last, and every (B, C, H, W) input converted on the way in (the
    few-shot models reshape (E, S, C, H, W) batches, which drops a caller's memory format)."""
    module.to(memory_format=torch.channels_last)
    module.register_forward_pre_hook(
        lambda m, args: (args[0].contiguous(memory_format=torch.channels_last), *args[1:]))
    return module


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_step(step: Callable[[], object], device: str) -> float:
    for _ in range(WARMUP):
        step()
    times: list[float] = []
    while len(times) < STEPS and (len(times) < 2 or sum(times) < ROW_BUDGET_S):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loss_and_grad(model: nn.Module, loss_of: Callable, params: Callable, batch: tuple) -> tuple[float, Tensor]:
    loss = loss_of(model, batch)
    grads = torch.autograd.grad(loss, params(model))
    return loss.item(), torch.cat([g.detach().flatten().double().cpu() for g in grads])


def _mismatch(got: tuple[float, Tensor], ref: tuple[float, Tensor]) -> str | None:
    (loss, grad), (ref_loss, ref_grad) = got, ref
    if not abs(loss - ref_loss) <= RTOL * max(1.0, abs(ref_loss)):
        return f"float64 loss {loss:.10g} vs eager {ref_loss:.10g}"
    err = ((grad - ref_grad).norm() / ref_grad.norm().clamp_min(1e-300)).item()
    if not err <= RTOL:
        return f"float64 gradients differ from eager by {err:.2e} (relative norm)"
    return None


def _run_rows(op: str, device: str, variants: list[Variant], build: Callable[[Variant, torch.dtype], nn.Module],
              loss_of: Callable[[nn.Module, tuple], Tensor], params: Callable[[nn.Module], list[Tensor]],
              batches: dict[torch.dtype, tuple], extra: dict) -> list[dict]:
    """One row per variant: checked in float64 against the first (eager) variant, then timed."""
    threads = torch.get_num_threads()
    rows: list[dict] = []
    ref = None
    try:
        for v in variants:
            if device == "cuda" and v.all_threads:
                continue  # intra-op threads are a CPU knob
            torch.set_num_threads(threads if v.all_threads else 1)
            if v.keep_heap:
                keep_freed_memory()
            row = dict(op=op, variant=v.name, device=device, threads=torch.get_num_threads(),
                       malloc="heap kept" if allocator.keeps_freed_memory() else "glibc default", **extra)
            first = not rows
            rows.append(row)
            try:
                got = _loss_and_grad(build(v, torch.float64), loss_of, params, batches[torch.float64])
                ref = got if first else ref
                error = "the eager reference failed" if ref is None else _mismatch(got, ref)
                if error is None:
                    start = time.perf_counter()
                    model = build(v, torch.float32)
                    loss_of(model, batches[torch.float32]).backward()  # the first (compiling) call
                    _sync(device)
                    row["first_call_s"] = time.perf_counter() - start
            except Exception as e:  # noqa: BLE001 - a variant that cannot run reports why
                error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            row.update(ok=error is None, error=error)
            if error is not None:
                continue
            opt = torch.optim.Adam(model.parameters(), 1e-3)

            def step() -> None:
                loss = loss_of(model, batches[torch.float32])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t = _median_step(step, device)
            row.update(median_step_s=t, iters_per_s=1.0 / t)
    finally:
        torch.set_num_threads(threads)
    base = next((r for r in rows if r["variant"] == "eager" and (r["threads"] == 1 or device == "cuda")), None)
    if base is not None and base["ok"]:
        for r in rows:
            if r["ok"]:
                r["speedup_vs_eager"] = base["median_step_s"] / r["median_step_s"]
    return rows


def protonet_train(device: str = "cpu") -> list[dict]:
    """Rows: op, setting, variant, device, threads, ok, error[, first_call_s, median_step_s,
    iters_per_s, speedup_vs_eager]."""
    torch.manual_seed(0)
    base = ProtoNet(Conv4(1, HIDDEN)).to(device)
    batches = _episodes(1, PROTO_WAYS, PROTO_SHOTS, PROTO_QUERIES, device)

    def build(v: Variant, dtype: torch.dtype) -> nn.Module:
        model = copy.deepcopy(base).to(dtype)
        if v.channels_last:
            _to_channels_last(model.encoder)
        if v.compile:
            model.encoder = torch.compile(model.encoder)
        return model

    variants = [Variant("eager", all_threads=True), Variant("eager"), Variant("channels_last", channels_last=True),
                Variant("channels_last", channels_last=True, all_threads=True), Variant("compile", compile=True),
                Variant("compile+channels_last", channels_last=True, compile=True),
                Variant("channels_last+heap", channels_last=True, keep_heap=True),
                Variant("channels_last+heap", channels_last=True, all_threads=True, keep_heap=True)]
    return _run_rows("protonet_train", device, variants, build,
                     lambda m, b: m.loss(*b, n_way=PROTO_WAYS)[0], lambda m: list(m.parameters()), batches,
                     dict(setting=f"{PROTO_WAYS}w{PROTO_SHOTS}s {PROTO_QUERIES}q, 1 episode"))


def maml_train(device: str = "cpu") -> list[dict]:
    """Rows as protonet_train's, plus order ("second" / "first")."""
    torch.manual_seed(0)
    base = nn.Sequential(Conv4(1, HIDDEN, track_running_stats=False), nn.Linear(HIDDEN, MAML_WAYS)).to(device)
    batches = _episodes(MAML_TASKS, MAML_WAYS, MAML_SHOTS, MAML_QUERIES, device)
    rows = []
    for order in ("second", "first"):
        def build(v: Variant, dtype: torch.dtype, first_order: bool = order == "first") -> nn.Module:
            net = copy.deepcopy(base).to(dtype)
            if v.channels_last:
                _to_channels_last(net)
            if v.compile:
                net = torch.compile(net)
            return MAML(net, inner_lr=MAML_LR, inner_steps=1, first_order=first_order, vectorize=v.vectorize)

        variants = [Variant("eager", all_threads=True), Variant("eager"), Variant("vmap", vectorize=True),
                    Variant("channels_last", channels_last=True)]
        if order == "first":
            variants.append(Variant("compile", compile=True))
        rows += _run_rows("maml_train", device, variants, build, lambda m, b: m.meta_loss(*b)[0],
                          lambda m: list(m.module.parameters()), batches,
                          dict(order=order, setting=f"{MAML_WAYS}w{MAML_SHOTS}s {MAML_QUERIES}q, {MAML_TASKS} tasks"))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'setting':<19} {'order':<6} {'variant':<21} {'thr':>3} {'malloc':<13} {'s/iter':>7} {'iter/s':>7} "
             f"{'x eager':>7} {'1st call s':>10}"]
    for r in rows:
        head = f"{r['setting']:<19} {r.get('order', '-'):<6} {r['variant']:<21} {r['threads']:>3} {r['malloc']:<13}"
        if not r["ok"]:
            lines.append(f"{head} WRONG or failed: {r['error']}")
            continue
        speedup = f"{r['speedup_vs_eager']:>7.2f}" if "speedup_vs_eager" in r else f"{'-':>7}"
        lines.append(f"{head} {r['median_step_s']:>7.3f} {r['iters_per_s']:>7.2f} {speedup} "
                     f"{r['first_call_s']:>10.1f}")
    return "\n".join(lines)


BENCHES = {"protonet_train": protonet_train, "maml_train": maml_train}
FORMATTERS = {"protonet_train": format_rows, "maml_train": format_rows}
