"""The episode benchmark checks episodes before it times them, and degrades to a row with
ok=False and a note when the Omniglot archives are absent."""
import torch

from benchmarks import bench_data


def test_rows_are_checked_and_timed(omniglot_dir, monkeypatch):
    monkeypatch.setattr(bench_data, "SHARED_OMNIGLOT", omniglot_dir)
    monkeypatch.setattr(bench_data, "median_seconds", lambda fn, device: (fn(), 1e-3)[1])
    rows = bench_data.BENCHES["omniglot_episodes"]("cpu")
    assert [r["ok"] for r in rows] == [True] * len(bench_data.BATCHES)
    for r, episodes in zip(rows, bench_data.BATCHES):
        assert r["unit"] == "episodes/s" and r["median_s"] == 1e-3 and r["throughput"] == episodes / 1e-3
    assert torch.get_num_threads() >= 1


def test_wrong_episodes_are_caught(omniglot_background):
    sampler = bench_data.EpisodeSampler(omniglot_background, 5, 1, 15, seed=0)
    batch = sampler.sample(2)
    assert bench_data._check(batch, sampler, 2) is None
    batch.query_images[1, 3] = batch.query_images[1, 40]  # an image of another class
    assert "not an image of its labelled class" in bench_data._check(batch, sampler, 2)


def test_missing_archives_give_a_failed_row_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_data, "SHARED_OMNIGLOT", tmp_path / "absent")
    (row,) = bench_data.BENCHES["omniglot_episodes"]("cpu")
    assert row["ok"] is False and "skipped" in row["note"] and row["throughput"] is None
