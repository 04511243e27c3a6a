"""The mann_episode benchmark checks every variant against the float64 reference before it times: a wrong
variant reports no speed; the fused kernel is right and timed beside the loops it replaces."""
import functools

import pytest

import metalearn_ext
from benchmarks import bench_mann_episode as bench
from benchmarks import run, timing
from metalearn_ext.ops.mann_episode import mann_episode_reference

SHAPE = (2, 3, 4, 2, 5, 3)  # (B, L, n, H, S, W)


def test_wrong_variant_reports_no_speed(monkeypatch):
    real = bench._variants
    ref = functools.partial(mann_episode_reference, heads=2, slots=5, gamma=bench.GAMMA, memory_init=bench.INIT)

    def wrong(*args):
        h, r = ref(*args)
        return h * (1 + 1e-6), r  # past the float64 check's 1e-9

    def variants(device, heads, slots):
        found = real(device, heads, slots)
        return {"reference": found["reference"], "wrong": wrong,
                **{k: v for k, v in found.items() if k in ("cpp", "loop of cpp steps")}}

    monkeypatch.setattr(bench, "_variants", variants)
    monkeypatch.setattr(timing, "median_seconds", lambda fn, device, min_run_time=0.5: (fn(), 1e-3)[1])  # correctness is the point
    rows = bench.run("cpu", shapes=[SHAPE])
    by = {(r["backend"], r["mode"]): r for r in rows}
    assert by["reference", "fwd"]["ok"] and by["reference", "fwd+bwd"]["median_ms"] > 0
    assert not by["wrong", "fwd"]["ok"] and by["wrong", "fwd"]["error"].startswith("output 0:")
    assert by["wrong", "fwd"]["error"].endswith("(allowed 1e-09)")
    assert "median_ms" not in by["wrong", "fwd"] and "WRONG" in bench.format_rows(rows)
    if metalearn_ext.backends()["cpp"].available:
        assert by["cpp", "fwd+bwd"]["ok"] and by["loop of cpp steps", "fwd+bwd"]["ok"]
        assert by["cpp", "fwd+bwd"]["speedup_vs_reference"] == pytest.approx(1.0)
    assert "mann_episode" in run.registry()[0]
