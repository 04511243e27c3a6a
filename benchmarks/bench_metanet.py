"""MetaNet meta-training throughput: the support examples' per-example gradients in one
``torch.func.vmap(grad(...))`` call against a loop of per-example backward passes (the original
code's way), on Omniglot-sized episodes (28×28, the paper's nets: 5 conv blocks of 64, fc 64).

``metanet_train``: one meta-iteration = one episode's forward + backward + Adam step, in float32,
on one thread. Rows per setting (N-way 1-shot, 5 queries per class) and ``fast_layers`` (None: every
layer, the paper's ~154k gradient coordinates per support example and net; 2: the quick config's):
``vmap`` and ``loop``, each with the median meta-iteration, the median of the support-gradient
step alone, and process CPU time beside wall time (the machine may be shared: CPU time is what
this process got).

Correctness first: from the same weights and episode, in float64, the two modes must give the
same per-example gradients and the same meta-loss and meta-gradient within 1e-6 (relative),
else the row reports ok=False and no speed. Images are random (speed does not depend on them).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from metalearn_ext.nn import MetaNet

SETTINGS = [(5, None), (5, 2), (20, 2)]  # (N-way, fast_layers), 1-shot
QUERIES, SIZE, MAX_WAY = 5, 28, 20
MODES = ("vmap", "loop")
WARMUP, STEPS = 1, 5
ROW_BUDGET_S = 20.0  # a slow row stops after 2 timed iterations once it has spent this long
RTOL = 1e-6


def _episode(n: int, dtype: torch.dtype, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(n, 1, SIZE, SIZE, generator=g, dtype=torch.float64).to(dtype)
    qx = torch.rand(n * QUERIES, 1, SIZE, SIZE, generator=g, dtype=torch.float64).to(dtype)
    return sx, torch.arange(n), qx, torch.arange(n).repeat_interleave(QUERIES)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def check(model: MetaNet, n: int) -> str | None:
    """None if vmap and loop agree in float64 (per-example gradients, loss, meta-gradient), else why."""
    model = model.double()
    device = next(model.parameters()).device
    try:
        sx, sy, qx, qy = (t.to(device) for t in _episode(n, torch.float64))
        got = {}
        for mode in MODES:
            model.gradients = mode
            base, key = model.support_gradients(sx, sy, n)
            loss, _ = model.loss(sx, sy, qx, qy)
            params = list(model.parameters())
            meta = torch.autograd.grad(loss, params, allow_unused=True)  # the key net's output layer: unused
            got[mode] = (torch.cat([g.flatten() for g in [*base.values(), *key.values()]]), loss.detach(),
                         torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, meta)]))
        (g1, l1, m1), (g2, l2, m2) = got["vmap"], got["loop"]
        for what, err in (("per-example gradients", _rel(g1, g2)), ("meta-loss", _rel(l1, l2)),
                          ("meta-gradient", _rel(m1, m2))):
            if not err <= RTOL:
                return f"float64 {what}: vmap vs loop differ by {err:.2e} (relative)"
        return None
    finally:
        model.float()


def _median(fn: Callable[[], object]) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) per call after warm-up."""
    for _ in range(WARMUP):
        fn()
    wall: list[float] = []
    cpu: list[float] = []
    while len(wall) < STEPS and (len(wall) < 2 or sum(wall) < ROW_BUDGET_S):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def metanet_train(device: str = "cpu", settings: list[tuple[int, int | None]] | None = None) -> list[dict]:
    """Rows: op, setting, fast_layers, mode, device, threads, ok, error[, median_step_s, cpu_step_s,
    iters_per_s, grads_median_s, speedup_vs_loop]."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: list[dict] = []
    try:
        for n, fast_layers in settings or SETTINGS:
            torch.manual_seed(0)
            model = MetaNet(max_way=MAX_WAY, fast_layers=fast_layers).to(device)
            error = check(model, n)
            sx, sy, qx, qy = (t.to(device) for t in _episode(n, torch.float32))
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            per_mode = {}
            for mode in MODES:
                row = dict(op="metanet_train", setting=f"{n}w1s {QUERIES}q", fast_layers=fast_layers, mode=mode,
                           device=device, threads=1, ok=error is None, error=error)
                rows.append(row)
                if error is not None:
                    continue
                model.gradients = mode

                def step() -> None:
                    loss, _ = model.loss(sx, sy, qx, qy)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                wall, cpu = _median(step)
                row.update(median_step_s=wall, cpu_step_s=cpu, iters_per_s=1.0 / wall,
                           grads_median_s=_median(lambda: model.support_gradients(sx, sy, n))[0])
                per_mode[mode] = row
            if len(per_mode) == 2:
                for r in per_mode.values():
                    r["speedup_vs_loop"] = per_mode["loop"]["median_step_s"] / r["median_step_s"]
    finally:
        torch.set_num_threads(threads)
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'setting':<10} {'fast':>4} {'mode':<5} {'s/iter':>7} {'cpu s':>7} {'iter/s':>7} {'x loop':>7} "
             f"{'grads s':>8}"]
    for r in rows:
        fast = "all" if r["fast_layers"] is None else str(r["fast_layers"])
        head = f"{r['setting']:<10} {fast:>4} {r['mode']:<5}"
        if not r["ok"]:
            lines.append(f"{head} WRONG or failed: {r['error']}")
            continue
        speedup = f"{r['speedup_vs_loop']:>7.2f}" if "speedup_vs_loop" in r else f"{'-':>7}"
        lines.append(f"{head} {r['median_step_s']:>7.3f} {r['cpu_step_s']:>7.3f} {r['iters_per_s']:>7.2f} {speedup} "
                     f"{r['grads_median_s']:>8.4f}")
    return "\n".join(lines)


BENCHES = {"metanet_train": metanet_train}
FORMATTERS = {"metanet_train": format_rows}
