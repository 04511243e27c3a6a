"""benchmarks/bench_metanet.py checks vmap against the loop before it times: a wrong path reports no speed."""
import torch

from benchmarks import bench_metanet as bench
from metalearn_ext.nn import MetaNet


def _wrong_loop(monkeypatch):
    right = MetaNet.support_gradients

    def wrong(self, support_x, support_y, n_way, mode=None):
        base, key = right(self, support_x, support_y, n_way, mode)
        if (self.gradients if mode is None else mode) == "loop":
            base = {n: g * 1.001 for n, g in base.items()}
        return base, key

    monkeypatch.setattr(MetaNet, "support_gradients", wrong)


def test_check_passes_when_both_agree_and_names_what_differs(monkeypatch):
    torch.manual_seed(0)
    model = MetaNet(max_way=4, image_size=28, hidden=4, depth=5, embed=8, fast_layers=None)
    assert bench.check(model, 3) is None
    assert model.base.head.weight.dtype == torch.float32  # the check leaves the model in float32
    _wrong_loop(monkeypatch)
    assert "per-example gradients" in bench.check(model, 3)


def test_wrong_path_reports_no_speed(monkeypatch):
    _wrong_loop(monkeypatch)
    monkeypatch.setattr(bench, "STEPS", 2)
    rows = bench.metanet_train("cpu", settings=[(2, 2)])
    assert [r["mode"] for r in rows] == ["vmap", "loop"]
    assert not any(r["ok"] for r in rows) and all("median_step_s" not in r for r in rows)
    assert "WRONG" in bench.format_rows(rows)


def test_rows_side_by_side(monkeypatch):
    monkeypatch.setattr(bench, "STEPS", 2)
    rows = bench.metanet_train("cpu", settings=[(2, 2)])
    assert all(r["ok"] and r["median_step_s"] > 0 and r["grads_median_s"] > 0 for r in rows)
    assert rows[1]["speedup_vs_loop"] == 1.0
    assert len(bench.format_rows(rows).splitlines()) == 3
