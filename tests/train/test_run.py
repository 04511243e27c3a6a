"""The run: checkpoints (atomic, exact resume, clear errors), metrics, non-finite steps, Ctrl-C, CLI."""
import argparse
import json
import os
import signal

import pytest
import torch

from metalearn_ext.train import runner
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalearn_ext.train.cli import add_train_subparsers
from metalearn_ext.train.common import StepResult
from metalearn_ext.train.runner import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, run_training
from tests.train.helpers import tiny_config


def _params(ckpt):
    return torch.cat([v.flatten() for v in ckpt["model"].values()])


def _opt_tensors(ckpt):
    return [t for s in ckpt["optimizer"]["state"].values() for t in s.values() if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("method", ["bptt", "es"])
def test_resume_continues_exactly(tmp_path, method):
    cfg = tiny_config(train={"method": method, "steps": 4, "checkpoint_every": 2, "truncation": 4})
    assert run_training(cfg, tmp_path / "full", log=lambda m: None) == EXIT_OK
    half = tiny_config(train={"method": method, "steps": 2, "checkpoint_every": 2, "truncation": 4})
    assert run_training(half, tmp_path / "split", log=lambda m: None) == EXIT_OK
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 2
    assert run_training(cfg, tmp_path / "split", resume=True, log=lambda m: None) == EXIT_OK
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4
    assert torch.equal(_params(a), _params(b))
    assert all(torch.equal(x, y) for x, y in zip(_opt_tensors(a), _opt_tensors(b)))
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    full_rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["meta_loss"] for r in rows] == [r["meta_loss"] for r in full_rows]
    assert {"step", "meta_loss", "synapse_ticks_per_s", "wall_time"} <= rows[0].keys()
    assert rows[0]["synapse_ticks_per_s"] > 0
    assert json.loads((tmp_path / "full" / "eval.json").read_text())["chance"] == pytest.approx(1 / 3)


def test_checkpoint_errors_leave_the_file_untouched(tmp_path):
    cfg = tiny_config(train={"steps": 2})
    out = tmp_path / "run"
    assert run_training(cfg, out, log=lambda m: None) == EXIT_OK
    ckpt = out / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="--resume"):
        run_training(cfg, out, log=lambda m: None)
    other = tiny_config(model={"state_size": 8}, train={"steps": 3})
    good = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="model.state_size"):
        run_training(other, out, resume=True, log=lambda m: None)
    assert ckpt.read_bytes() == good
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        run_training(cfg, out, resume=True, log=lambda m: None)
    assert ckpt.read_bytes() == good[: len(good) // 2]
    torch.save({"something": "else"}, ckpt)
    with pytest.raises(CheckpointError, match="not a VSML meta-training checkpoint"):
        load_checkpoint(ckpt)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.pt"]


def test_non_finite_steps_are_skipped_then_the_run_stops(tmp_path, monkeypatch):
    real = runner.bptt_step
    calls = {"n": 0}

    def flaky(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            return real(model, *args, **kwargs)
        return StepResult(float("nan"), False, 0)

    monkeypatch.setattr(runner, "bptt_step", flaky)
    logs = []
    cfg = tiny_config(train={"steps": 20, "checkpoint_every": 2, "max_bad_steps": 3})
    assert run_training(cfg, tmp_path, log=logs.append) == EXIT_DIVERGED
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2  # the last good one, intact
    assert sum("update skipped" in m for m in logs) == 3 and "stopping" in logs[-1]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["applied"] for r in rows] == [True, True, False, False, False]
    assert rows[-1]["meta_loss"] is None


def test_bptt_skips_a_non_finite_update(monkeypatch):
    from metalearn_ext.train.bptt import bptt_step

    trainer = runner.MetaTrainer(tiny_config())
    real_learn = trainer.model.learn
    monkeypatch.setattr(trainer.model, "learn", lambda x, y: tuple(t * float("nan") for t in real_learn(x, y)))
    before = trainer.model.parameter_vector().detach().clone()
    r = bptt_step(trainer.model, trainer.optimizer, trainer.tasks, seed=0, step=0, meta_batch=4, length=8,
                  truncation=None, clip=25.0)
    assert not r.applied
    assert torch.equal(trainer.model.parameter_vector().detach(), before)


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, monkeypatch):
    real = runner.bptt_step
    calls = {"n": 0}

    def interrupted_at_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # mid-step: the step finishes, then the run saves
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "bptt_step", interrupted_at_3)
    logs = []
    cfg = tiny_config(train={"steps": 50, "checkpoint_every": 100})
    assert run_training(cfg, tmp_path, log=logs.append) == EXIT_INTERRUPTED
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(runner, "bptt_step", real)
    assert run_training(tiny_config(train={"steps": 4}), tmp_path, resume=True, log=logs.append) == EXIT_OK
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


def _cli(argv):
    parser = argparse.ArgumentParser(prog="metalearn")
    add_train_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_trains_and_reports_bad_keys(tmp_path, capsys):
    sets = ["--set", "model.state_size=4", "--set", "model.msg_size=4", "--set", "data.num_classes=3",
            "--set", "data.image_size=4", "--set", "data.episode_length=6", "--set", "train.steps=2",
            "--set", "train.population=4", "--set", "train.eval_streams=2", "--set", "train.progress=false"]
    assert _cli(["train", "vsml", "--es", *sets, "--out", str(tmp_path / "r")]) == 0
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["config"]["train"]["method"] == "es"
    assert "method: es" in (tmp_path / "r" / "config.yaml").read_text()
    assert _cli(["train", "vsml", "--set", "train.stepz=3", "--out", str(tmp_path / "x")]) == 2
    assert "'train.stepz'" in capsys.readouterr().err
    assert _cli(["train", "vsml", "--set", "data.num_classes=12", "--out", str(tmp_path / "y")]) == 2
    assert "'data.num_classes'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli(["train", "vsml", "--es", "--bptt"])
