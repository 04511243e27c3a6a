"""benchmarks/bench_np.py: the batched GP draw is checked equal to the per-curve one before it is timed."""
from benchmarks import bench_np


def test_gp_sampling_checks_before_timing(monkeypatch):
    monkeypatch.setattr(bench_np, "SAMPLING_REPEATS", 1)
    rows = bench_np.gp_sampling("cpu")
    assert [r["variant"] for r in rows] == ["per-curve Cholesky", "batched Cholesky"]
    assert all(r["ok"] and r["median_s"] > 0 for r in rows) and rows[0]["speedup_vs_per_curve"] == 1.0
    assert "batched Cholesky" in bench_np.format_sampling(rows)
