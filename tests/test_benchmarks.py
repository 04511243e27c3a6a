"""The benchmark runner checks correctness before it times (a wrong kernel reports no speed) and finds
every benchmarks/bench_*.py by itself."""
import functools
import sys

import benchmarks
from benchmarks import bench_vsml_step as bench
from benchmarks import run
from benchmarks.timing import check_against
from metalearn_ext.ops.vsml_step import vsml_step_reference


def test_wrong_kernel_reports_no_speed(monkeypatch):
    ref = functools.partial(vsml_step_reference, ticks=bench.TICKS)
    monkeypatch.setattr(bench, "candidates", lambda device: {"reference": ref})

    def wrong(*args):
        h, c, fm, bm = ref(*args)
        return h, c, fm * 1.01, bm

    rows = bench.run("cpu", shapes=[(2, 3, 4, 8, 2)], extra={"wrong": wrong})
    by_backend = {(r["backend"], r["mode"]): r for r in rows}
    assert by_backend[("reference", "fwd")]["ok"] and by_backend[("reference", "fwd")]["median_ms"] > 0
    bad = by_backend[("wrong", "fwd")]
    assert not bad["ok"] and "fwd_mean" in bad["error"] and "median_ms" not in bad
    assert "WRONG" in bench.format_rows(rows)


def test_check_against_names_the_first_mismatch():
    """The check every op benchmark runs before timing: right gives None; a wrong output, a wrong gradient, NaN, a
    wrong shape or a missing output are each named; the reference runs in float64 unless told otherwise."""
    import torch

    def ref(x, y):
        return [x * y, (x + y).sum(-1)]

    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)]
    upstream = [torch.randn(3, 4, generator=g), torch.randn(3, generator=g)]
    assert check_against(ref, ref, inputs, upstream) is None
    assert check_against(lambda x, y: [x * y * (1 + 1e-3), (x + y).sum(-1)], ref, inputs, upstream).startswith(
        "output 0: max abs error")
    # x * y.detach() is right forward, misses y's gradient through the product
    assert check_against(lambda x, y: [x * y.detach(), (x + y).sum(-1)], ref, inputs, upstream).startswith(
        "gradient 1:")
    assert check_against(lambda x, y: [x * y, (x + y).sum(-1) * float("nan")], ref, inputs, upstream).startswith(
        "output 1:")
    assert "shape" in check_against(lambda x, y: [x * y, (x + y).sum(-1, keepdim=True)], ref, inputs, upstream)
    assert "1 outputs" in check_against(lambda x, y: [x * y], ref, inputs, upstream)
    assert check_against(ref, ref, inputs, upstream, names=["p", "s", "dx", "dy"]) is None
    seen = []
    check_against(ref, lambda x, y: (seen.append(x.dtype), ref(x, y))[1], inputs, upstream)
    check_against(ref, lambda x, y: (seen.append(x.dtype), ref(x, y))[1], inputs, upstream, reference_dtype=None)
    assert seen == [torch.float64, torch.float32]
    # float32 against float64 at a tolerance float32 cannot meet, unless fn runs in float64 too
    assert check_against(ref, ref, [x * 1e3 for x in inputs], upstream, tol=1e-12) is not None
    assert check_against(ref, ref, [x * 1e3 for x in inputs], upstream, tol=1e-12, fn_in_reference_dtype=True) is None


def test_table_shows_every_ratio_or_a_dash(monkeypatch):
    """Each baseline row gets its ratio to the other baseline, timed after it; a baseline not run is '-'."""
    ref = functools.partial(vsml_step_reference, ticks=bench.TICKS)
    monkeypatch.setattr(bench, "candidates", lambda device: {"reference": ref, "reference+compile": ref})
    rows = bench.run("cpu", shapes=[(1, 2, 3, 8, 2)])
    assert all("speedup_vs_reference+compile" in r for r in rows)
    table = bench.format_rows(rows)
    assert "nan" not in table.lower()
    only_ref = [r for r in rows if r["backend"] == "reference"]
    for r in only_ref:
        del r["speedup_vs_reference+compile"]
    line = bench.format_rows(only_ref).splitlines()[2]
    assert line.split()[-2:] == ["-", "-"], line  # x compiled, roofline


def test_io_bytes_counts_state_twice_each_way():
    T, A, B, N, M = 1, 2, 3, 16, 8
    assert bench.io_bytes(T, A, B, N, M) >= 4 * 4 * T * A * B * N


def test_runner_discovers_every_bench_module(monkeypatch, tmp_path):
    (tmp_path / "bench_discovery_probe.py").write_text(
        "BENCHES = {'discovery_probe': lambda device: [dict(op='discovery_probe', device=device, ok=True)]}\n")
    (tmp_path / "helper_not_a_bench.py").write_text("raise AssertionError('only bench_*.py are imported')\n")
    monkeypatch.setattr(benchmarks, "__path__", [*benchmarks.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "benchmarks.bench_discovery_probe", raising=False)
    try:
        assert "benchmarks.bench_vsml_step" in run.modules()
        benches, formatters = run.registry()
        assert "vsml_step" in benches and formatters["vsml_step"] is bench.format_rows
        assert benches["discovery_probe"]("cpu") == [dict(op="discovery_probe", device="cpu", ok=True)]
        assert run.main(["--op", "discovery_probe"]) == 0
    finally:
        sys.modules.pop("benchmarks.bench_discovery_probe", None)
