"""One MANN training iteration (specs/memory_np.md §1: batch 16, 50 steps, 5 classes, 20×20 inputs,
LSTM 200 + memory 128 × 40, 4 heads; forward + backward + clip 10 + Adam), the memory ops on their
default backend and on the reference, the default backend step by step and (on a CPU) as one fused
``mann_episode`` call, beside an ``nn.LSTM`` baseline of the same width on the same episodes
(:class:`metalearn_ext.nn.MetaRNN`). The last rows (fused MANN and the LSTM again) run after
:func:`metalearn_ext.keep_freed_memory`, as the ``metalearn`` command's runs do: glibc then reuses freed heap
memory instead of mapping fresh pages for large blocks; each row says which (``malloc``). That setting cannot
be undone in a process, so ``--op all`` runs every later benchmark with it.

Correctness first: from the same weights and episodes, in float64, the default backend's loss and
gradients must equal the reference's within 1e-6 (relative), else the row reports ok=False and no
speed. Inputs are random binary images (speed does not depend on them), so no data set is needed.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import Tensor, nn

from metalearn_ext import allocator, keep_freed_memory
from metalearn_ext.nn import MANN, MetaRNN
from metalearn_ext.ops.choice import choose_backend

BATCH, CLASSES, PER_CLASS, SIZE, HIDDEN = 16, 5, 10, 20, 200
WARMUP, STEPS, ROW_BUDGET_S = 2, 10, 6.0  # a slow row stops timing after 3 iterations once it spent this long
RTOL = 1e-6


def _episodes(dtype: torch.dtype, device: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """inputs (B, L, D) binary, labels (B, L): every class PER_CLASS times in a random order."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(BATCH, CLASSES * PER_CLASS, SIZE * SIZE, generator=g) < 0.2).to(dtype)
    y = torch.arange(CLASSES).repeat_interleave(PER_CLASS).expand(BATCH, -1)
    y = y.gather(1, torch.rand(y.shape, generator=g).argsort(1))
    return x.to(device), y.to(device)


def _loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return model.learn(*batch)[1].mean()


def _loss_and_grad(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[float, Tensor]:
    loss = _loss(model, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.item(), torch.cat([g.flatten().double().cpu() for g in grads])


def _mismatch(got: tuple[float, Tensor], ref: tuple[float, Tensor]) -> str | None:
    (loss, grad), (ref_loss, ref_grad) = got, ref
    if not abs(loss - ref_loss) <= RTOL * max(1.0, abs(ref_loss)):
        return f"float64 loss {loss:.10g} vs reference {ref_loss:.10g}"
    err = ((grad - ref_grad).norm() / ref_grad.norm().clamp_min(1e-300)).item()
    return None if err <= RTOL else f"float64 gradients differ from the reference by {err:.2e} (relative norm)"


def _median_iteration(model: nn.Module, batch: tuple[Tensor, Tensor], device: str) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds per iteration (on a CPU shared with other
    jobs the CPU time is the steadier figure: it does not count the time the process waited)."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> None:
        loss = _loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(WARMUP):
        step()
    times: list[float] = []
    cpu: list[float] = []
    while len(times) < STEPS and (len(times) < 3 or sum(times) < ROW_BUDGET_S):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), statistics.median(cpu)


def _matmul_floor(mann: MANN, device: str) -> tuple[float, float]:
    """Wall and CPU seconds of the controller's matrix products alone in one iteration, at the model's
    shapes: per step the recurrent gates and the head projection (forward, input gradient, weight
    gradient), per episode the input gates (forward, weight gradient). No kernel for the memory makes
    an iteration cheaper than this."""
    w = {k: v.detach() for k, v in mann.named_parameters()}
    length = CLASSES * PER_CLASS
    r = torch.rand(BATCH, w["recurrent_gates.weight"].shape[1], device=device)
    h = torch.rand(BATCH, mann.hidden, device=device)
    g = torch.rand(BATCH, w["recurrent_gates.weight"].shape[0], device=device)
    gh = torch.rand(BATCH, w["head_proj.weight"].shape[0], device=device)
    x = torch.rand(BATCH * length, w["input_gates.weight"].shape[1], device=device)
    gx = torch.rand(BATCH * length, w["input_gates.weight"].shape[0], device=device)
    wr, wh, wx = w["recurrent_gates.weight"].t(), w["head_proj.weight"].t(), w["input_gates.weight"].t()

    def products() -> None:
        for _ in range(length):
            r @ wr, g @ wr.t(), r.t() @ g
            h @ wh, gh @ wh.t(), h.t() @ gh
        x @ wx, x.t() @ gx
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(WARMUP):
        products()
    wall, cpu = [], []
    for _ in range(STEPS):
        start, start_cpu = time.perf_counter(), time.process_time()
        products()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _backends_fused(mann: MANN, device: str) -> bool:
    """Whether the fused episode kernel (ops.mann_episode, cpp) runs for these tensors."""
    x = torch.zeros(BATCH, CLASSES * PER_CLASS, 4 * mann.hidden, device=device)
    return choose_backend("mann_episode", None, x, mann.recurrent_gates.weight, mann.head_proj.weight,
                          mann.head_proj.bias, mann.heads, mann.slots, mann.gamma, mann.memory_init) == "cpp"


def run(device: str = "cpu") -> list[dict]:
    """Rows: op, model, backend (the one the default resolves to step by step, "cpp, fused episode", or
    "reference"; "matmuls only": the
    controller's matrix products alone, the floor), device, threads, ok, error[, median_iter_s,
    iters_per_s, median_cpu_s, speedup_vs_reference]."""
    torch.manual_seed(0)
    d = SIZE * SIZE
    mann = MANN(d, CLASSES, HIDDEN).to(device)
    torch.manual_seed(0)
    lstm = MetaRNN(d, CLASSES, HIDDEN).to(device)
    batches = {dt: _episodes(dt, device) for dt in (torch.float32, torch.float64)}
    # the backend the default resolves to for these tensors (memory (B, S, W) as the model makes it)
    B, S, W, H = BATCH, mann.slots, mann.width, mann.heads
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    default = choose_backend("mann_memory_step", None, z(B, S, W), z(B, S), z(B, H, S), z(B, H, W), z(B, H, W),
                             z(B, H), mann.gamma)
    fused = _backends_fused(mann, device)
    # (model, backend, module, fused, keep_freed_memory() before the row: irreversible, so such rows come last)
    variants = [("MANN", "reference", mann, False, False), ("MANN", default, mann, False, False)]
    if fused:
        variants.append(("MANN", "cpp, fused episode", mann, True, False))
    variants.append(("LSTM", "-", lstm, False, False))
    if default == "reference":  # no kernel built for these tensors: one row says so
        variants[:2] = [("MANN", "reference", mann, False, False)]
    if fused and device == "cpu":
        variants += [("MANN", "cpp, fused episode", mann, True, True), ("LSTM", "-", lstm, False, True)]
    ref = None
    rows = []
    for name, backend, base, fuse, keep_heap in variants:
        if keep_heap:
            keep_freed_memory()
        row = dict(op="mann_train", model=name, backend=backend, device=device, threads=torch.get_num_threads(),
                   setting=f"batch {BATCH}, {CLASSES * PER_CLASS} steps, {CLASSES} classes",
                   malloc="heap kept" if allocator.keeps_freed_memory() else "glibc default")
        if name == "MANN" and default == "reference":
            row["backend"] = "reference=default"
        rows.append(row)
        model = copy.deepcopy(base)
        if name == "MANN":
            model.backend, model.fused = ("cpp" if fuse else backend), fuse
        error = None
        if name == "MANN":
            got = _loss_and_grad(copy.deepcopy(model).double(), batches[torch.float64])
            ref = got if backend == "reference" else ref
            error = _mismatch(got, ref)
        row.update(ok=error is None, error=error)
        if error is None:
            t, cpu = _median_iteration(model, batches[torch.float32], device)
            row.update(median_iter_s=t, iters_per_s=1.0 / t, median_cpu_s=cpu)
    t, cpu = _matmul_floor(mann, device)
    rows.append({**rows[0], "model": "MANN", "backend": "matmuls only", "ok": True, "error": None,
                 "malloc": "heap kept" if allocator.keeps_freed_memory() else "glibc default",
                 "median_iter_s": t, "iters_per_s": 1.0 / t, "median_cpu_s": cpu})
    base_t = rows[0].get("median_cpu_s")
    for r in rows:
        if r["ok"] and base_t:
            r["speedup_vs_reference"] = base_t / r["median_cpu_s"]  # CPU time: steadier on a shared machine
    return rows


def format_rows(rows: list[dict]) -> str:
    """ms/iter: median wall time; cpu ms: median process CPU time; x ref: MANN-reference CPU time / the row's."""
    lines = [f"{'setting':<32} {'model':<5} {'backend':<19} {'malloc':<13} {'thr':>3} {'ms/iter':>8} {'cpu ms':>7} "
             f"{'iter/s':>7} {'x ref':>6}"]
    for r in rows:
        head = f"{r['setting']:<32} {r['model']:<5} {r['backend']:<19} {r.get('malloc', ''):<13} {r['threads']:>3}"
        if not r["ok"]:
            lines.append(f"{head} WRONG: {r['error']}")
            continue
        lines.append(f"{head} {1e3 * r['median_iter_s']:>8.1f} {1e3 * r['median_cpu_s']:>7.1f} "
                     f"{r['iters_per_s']:>7.2f} {r.get('speedup_vs_reference', float('nan')):>6.2f}")
    return "\n".join(lines)


BENCHES = {"mann_train": run}
FORMATTERS = {"mann_train": format_rows}
