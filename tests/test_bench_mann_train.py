"""The mann_train benchmark checks the default backend against the reference before it times: a
wrong memory step reports no speed; the reference and the LSTM rows are timed."""
from metalearn_ext.ops.mann_episode import reference as loop_module
from benchmarks import bench_mann_train as bench
from benchmarks import run


def _tiny(monkeypatch):
    for name, v in (("BATCH", 2), ("CLASSES", 2), ("PER_CLASS", 2), ("SIZE", 4), ("HIDDEN", 8), ("WARMUP", 0),
                    ("STEPS", 2)):
        monkeypatch.setattr(bench, name, v)


def test_wrong_default_backend_reports_no_speed(monkeypatch):
    _tiny(monkeypatch)
    real = loop_module.mann_memory_step

    def step(*args, backend=None):
        out = real(*args, backend="reference")
        return (out[0], out[1], out[2] * 1.01, *out[3:]) if backend == "fake" else out

    monkeypatch.setattr(loop_module, "mann_memory_step", step)
    monkeypatch.setattr(bench, "choose_backend", lambda *a: "fake")
    rows = {(r["model"], r["backend"]): r for r in bench.run("cpu")}
    assert rows["MANN", "reference"]["ok"] and rows["MANN", "reference"]["median_iter_s"] > 0
    assert rows["LSTM", "-"]["ok"] and rows["LSTM", "-"]["speedup_vs_reference"] > 0
    bad = rows["MANN", "fake"]
    assert not bad["ok"] and "float64" in bad["error"] and "median_iter_s" not in bad
    assert "WRONG" in bench.format_rows(list(rows.values()))


def test_one_reference_row_when_no_kernel_is_built(monkeypatch):
    _tiny(monkeypatch)
    monkeypatch.setattr(bench, "choose_backend", lambda *a: "reference")
    rows = bench.run("cpu")
    assert [(r["model"], r["backend"]) for r in rows] == [("MANN", "reference=default"), ("LSTM", "-"),
                                                          ("MANN", "matmuls only")]
    assert all(r["ok"] for r in rows) and "mann_train" in run.registry()[0]
