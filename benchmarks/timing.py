"""What every op benchmark shares: the median wall time of a callable (CUDA events on GPU, torch.utils.benchmark
on CPU), what one timed call runs, the speed-ups over the baselines, the correctness check that runs before any
timing (`check_against`), and the loop over one shape's variants and modes (`time_variants`)."""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch
import torch.utils.benchmark as tb

from metalearn_ext.ops.testing import outputs_and_grads


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


def check_against(fn: Callable, reference: Callable, inputs: Sequence[torch.Tensor], upstream: Sequence[torch.Tensor],
                  *, tol: float = 1e-4, names: Sequence[str] | None = None, fn_in_reference_dtype: bool = False,
                  reference_dtype: torch.dtype | None = torch.float64) -> str | None:
    """None if ``fn``'s outputs and the gradients of every input (for the ``upstream`` gradients of the outputs) match
    ``reference``'s, else what differs first: its name and its max abs error against ``tol · max(1, max |reference|)``.

    ``fn`` and ``reference`` take ``*inputs`` and return a list or tuple of outputs. The reference runs on the inputs
    cast to ``reference_dtype`` (float64 by default; None: as given), ``fn`` on the inputs as given, or also cast with
    ``fn_in_reference_dtype``. ``names``: one per output then one per input gradient (default "output i" and
    "gradient i"). NaN anywhere is a mismatch."""
    def cast(xs):
        return [x.to(reference_dtype) for x in xs] if reference_dtype is not None else list(xs)

    want_out, want_grads = outputs_and_grads(reference, cast(inputs), cast(upstream))
    got_out, got_grads = (outputs_and_grads(fn, cast(inputs), cast(upstream)) if fn_in_reference_dtype
                          else outputs_and_grads(fn, inputs, upstream))
    if len(got_out) != len(want_out):
        return f"{len(got_out)} outputs, the reference has {len(want_out)}"
    names = list(names) if names is not None else (
        [f"output {i}" for i in range(len(want_out))] + [f"gradient {i}" for i in range(len(want_grads))])
    for name, got, want in zip(names, [*got_out, *got_grads], [*want_out, *want_grads]):
        if got.shape != want.shape:
            return f"{name}: shape {tuple(got.shape)}, the reference's {tuple(want.shape)}"
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        err = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
        if not err <= tol * scale:  # also catches NaN
            return f"{name}: max abs error {err:.3g} (allowed {tol * scale:.3g})"
    return None


def time_variants(variants: dict[str, Callable], check: Callable[[str, Callable], str | None], inputs: list,
                  upstream: list, device: str, *, row: dict, work: dict[str, float] | None = None,
                  modes: Sequence[str] = ("fwd", "fwd+bwd"), min_run_time: float = 0.5,
                  extra: Callable[[dict, str, float], None] | None = None) -> list[dict]:
    """One shape's rows, a row per variant and mode: ``row``'s fields (op, shape, ...), then backend, mode, device, ok,
    error. ``check(name, fn)`` runs first (None, or what differs): a wrong variant gets no time. A right one gets
    median_ms and, for each ``work`` entry (name -> units per call), that rate per second; ``extra(row, mode,
    seconds)`` may add more. Speed-ups over the baselines are added once every variant is timed."""
    rows = []
    for name, fn in variants.items():
        error = check(name, fn)
        for mode in modes:
            r = {**row, "backend": name, "mode": mode, "device": device, "ok": error is None, "error": error}
            if error is None:
                t = median_seconds(op_call(fn, inputs, upstream, mode), device, min_run_time=min_run_time)
                r["median_ms"] = t * 1e3
                r.update({key: units / t for key, units in (work or {}).items()})
                if extra is not None:
                    extra(r, mode, t)
            rows.append(r)
    add_speedups(rows)
    return rows
