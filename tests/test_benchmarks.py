"""The benchmark runner checks correctness before it times: a wrong kernel reports no speed."""
import functools

import pytest

from benchmarks import bench_vsml_step as bench
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


def test_io_bytes_counts_state_twice_each_way():
    T, A, B, N, M = 1, 2, 3, 16, 8
    assert bench.io_bytes(T, A, B, N, M) >= 4 * 4 * T * A * B * N
