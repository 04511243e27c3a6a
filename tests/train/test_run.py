"""The run loop: checkpoints (atomic, exact resume, clear errors), metrics, non-finite steps,
Ctrl-C and SIGTERM, resume with the run's own config, the CLI's errors."""
import json
import os
import signal

import pytest
import torch
import yaml

from metalearn_ext.config import ConfigError
from metalearn_ext.train import loop
from metalearn_ext.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalearn_ext.train.loop import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, Trainer, resume_config, run_training
from metalearn_ext.train.step import StepResult
from tests.train.helpers import TINY_SETS, cli, tiny_config

quiet = lambda m: None  # noqa: E731


def _params(ckpt):
    return torch.cat([v.flatten() for v in ckpt["model"].values()])


def _opt_tensors(ckpt):
    return [t for s in ckpt["optimizer"]["state"].values() for t in s.values() if isinstance(t, torch.Tensor)]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("optimizer", ["gradient", "es"])
def test_resume_continues_exactly(tmp_path, optimizer):
    cfg = tiny_config(train={"optimizer": optimizer, "steps": 4, "checkpoint_every": 2, "truncation": 4})
    assert run_training(cfg, tmp_path / "full", log=quiet) == EXIT_OK
    half = tiny_config(train={"optimizer": optimizer, "steps": 2, "checkpoint_every": 2, "truncation": 4})
    assert run_training(half, tmp_path / "split", log=quiet) == EXIT_OK
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 2
    resumed = resume_config(tmp_path / "split", "vsml", ["train.steps=4"])
    assert resumed == cfg
    assert run_training(resumed, tmp_path / "split", resume=True, log=quiet) == EXIT_OK
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4
    assert torch.equal(_params(a), _params(b))
    assert all(torch.equal(x, y) for x, y in zip(_opt_tensors(a), _opt_tensors(b)))
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    rows, full_rows = _rows(tmp_path / "split" / "metrics.jsonl"), _rows(tmp_path / "full" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["meta_loss"] for r in rows] == [r["meta_loss"] for r in full_rows]
    assert {"step", "meta_loss", "synapse_ticks_per_s", "wall_time"} <= rows[0].keys()
    assert rows[0]["synapse_ticks_per_s"] > 0
    walls = [r["wall_time"] for r in rows]
    assert walls == sorted(walls)  # training time continues across the resume
    assert json.loads((tmp_path / "full" / "eval.json").read_text())["chance"] == pytest.approx(1 / 3)
    assert yaml.safe_load((tmp_path / "split" / "config.yaml").read_text())["train"]["steps"] == 4


def test_resume_uses_the_runs_own_config(tmp_path):
    """`train vsml --set train.optimizer=es --set train.steps=3`, then `--resume` with no options:
    it continues ES to step 3 (it used to re-read the default config and train BPTT to 500)."""
    out = str(tmp_path / "r")
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    assert cli(["train", "vsml", *sets, "--set", "train.optimizer=es", "--set", "train.population=4",
                "--set", "train.steps=2", "--out", out]) == 0
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert cli(["train", "vsml", "--out", out, "--resume"]) == 0  # nothing left to do
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 2
    assert (tmp_path / "r" / "config.yaml").read_text() == saved
    assert cli(["train", "vsml", "--out", out, "--resume", "--set", "train.steps=3"]) == 0
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["train"]["optimizer"] == "es"
    assert [r["step"] for r in _rows(tmp_path / "r" / "metrics.jsonl")] == [1, 2, 3]


def test_resume_refuses_changed_keys_other_methods_and_options(tmp_path, capsys):
    out = tmp_path / "r"
    assert run_training(tiny_config(train={"steps": 2}), out, log=quiet) == EXIT_OK
    good = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="model.state_size"):
        resume_config(out, "vsml", ["model.state_size=8", "train.steps=3"])
    with pytest.raises(CheckpointError, match="is a vsml run"):
        resume_config(out, "maml")
    assert cli(["train", "vsml", "--out", str(out), "--resume", "--config", "quick"]) == 2
    assert "drop --config" in capsys.readouterr().err
    assert cli(["train", "vsml", "--out", str(out), "--resume", "--set", "task.num_classes=4"]) == 2
    assert "task.num_classes" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == good


def test_a_fresh_run_does_not_append_to_leftover_metrics(tmp_path):
    """A run killed before its first checkpoint leaves metrics.jsonl behind; a fresh run in the same
    folder starts its own (it used to append: steps 1…18 then 1…5)."""
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "meta_loss": 1.0}) + "\n"
                                                    for s in range(1, 19)))
    assert run_training(tiny_config(train={"steps": 3}), tmp_path, log=quiet) == EXIT_OK
    assert [r["step"] for r in _rows(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_checkpoint_errors_leave_the_file_untouched(tmp_path):
    cfg = tiny_config(train={"steps": 2})
    out = tmp_path / "run"
    assert run_training(cfg, out, log=quiet) == EXIT_OK
    ckpt = out / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="--resume"):
        run_training(cfg, out, log=quiet)
    other = tiny_config(model={"state_size": 8}, train={"steps": 3})
    good = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="model.state_size"):
        run_training(other, out, resume=True, log=quiet)
    assert ckpt.read_bytes() == good
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        run_training(cfg, out, resume=True, log=quiet)
    assert ckpt.read_bytes() == good[: len(good) // 2]
    torch.save({"something": "else"}, ckpt)
    with pytest.raises(CheckpointError, match="not a metalearn_ext run checkpoint"):
        load_checkpoint(ckpt)


def test_checkpoints_load_weights_only(tmp_path):
    """No pickled code in a checkpoint: torch.load(weights_only=True) reads it, RNG states included."""
    assert run_training(tiny_config(train={"steps": 2}), tmp_path, log=quiet) == EXIT_OK
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["method"] == "vsml" and payload["shapes"] == {"input_dim": 16, "num_classes": 3}


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
    real = loop.gradient_step
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            return real(*args, **kwargs)
        return StepResult(float("nan"), False)

    monkeypatch.setattr(loop, "gradient_step", flaky)
    logs = []
    cfg = tiny_config(train={"steps": 20, "checkpoint_every": 2, "max_bad_steps": 3})
    assert run_training(cfg, tmp_path, log=logs.append) == EXIT_DIVERGED
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2  # the last good one, intact
    assert sum("update skipped" in m for m in logs) == 3 and "stopping" in logs[-1]
    rows = _rows(tmp_path / "metrics.jsonl")
    assert [r["applied"] for r in rows] == [True, True, False, False, False]
    assert rows[-1]["meta_loss"] is None


def test_gradient_step_skips_a_non_finite_update(monkeypatch):
    trainer = Trainer(tiny_config())
    real_learn = trainer.model.learn
    monkeypatch.setattr(trainer.model, "learn", lambda x, y: tuple(t * float("nan") for t in real_learn(x, y)))
    before = trainer.model.parameter_vector().detach().clone()
    r = trainer.step()
    assert not r.applied
    assert torch.equal(trainer.model.parameter_vector().detach(), before)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_and_exits_cleanly(tmp_path, monkeypatch, signum):
    real = loop.gradient_step
    calls = {"n": 0}

    def interrupted_at_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signum)  # mid-step: the step finishes, then the run saves
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "gradient_step", interrupted_at_3)
    logs = []
    cfg = tiny_config(train={"steps": 50, "checkpoint_every": 100})
    # what the process had before (default_int_handler and SIG_DFL; SIGINT ignored in a background job)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert run_training(cfg, tmp_path, log=logs.append) == EXIT_INTERRUPTED
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert any("--resume" in m for m in logs), logs
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored
    monkeypatch.setattr(loop, "gradient_step", real)
    assert run_training(resume_config(tmp_path, "vsml", ["train.steps=4"]), tmp_path, resume=True,
                        log=logs.append) == EXIT_OK
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


def test_a_second_signal_stops_at_once_without_a_traceback(tmp_path, monkeypatch):
    real = loop.gradient_step
    calls = {"n": 0}

    def twice_at_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the second raises KeyboardInterrupt right here
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "gradient_step", twice_at_3)
    logs = []
    cfg = tiny_config(train={"steps": 50, "checkpoint_every": 2})
    assert run_training(cfg, tmp_path, log=logs.append) == EXIT_INTERRUPTED
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2  # the last one saved, untouched
    assert "stopped at once" in logs[-1]


def test_timeouts_doubled_sigterm_still_saves_and_a_later_one_stops_at_once(tmp_path, monkeypatch):
    # GNU timeout sends SIGTERM to the command and again to its process group
    real = loop.gradient_step
    calls = {"n": 0}
    clock = {"t": 100.0}
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock["t"])

    def term_at_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            clock["t"] += 0.001
            os.kill(os.getpid(), signal.SIGTERM)  # the duplicate: ignored
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "gradient_step", term_at_3)
    logs = []
    cfg = tiny_config(train={"steps": 50, "checkpoint_every": 100})
    assert run_training(cfg, tmp_path / "a", log=logs.append) == EXIT_INTERRUPTED
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["step"] == 3
    assert not any("stopped at once" in m for m in logs)

    def term_then_later_at_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            clock["t"] += 5.0  # a person sending it again: stop at once
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    calls["n"] = 0
    monkeypatch.setattr(loop, "gradient_step", term_then_later_at_3)
    logs = []
    cfg = tiny_config(train={"steps": 50, "checkpoint_every": 2})
    assert run_training(cfg, tmp_path / "b", log=logs.append) == EXIT_INTERRUPTED
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 2
    assert "stopped at once" in logs[-1]


def test_cli_trains_and_reports_bad_input(tmp_path, capsys):
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    assert cli(["train", "vsml", *sets, "--set", "train.optimizer=es", "--set", "train.population=4",
                "--out", str(tmp_path / "r")]) == 0
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["config"]["train"]["optimizer"] == "es"
    assert "optimizer: es" in (tmp_path / "r" / "config.yaml").read_text()
    capsys.readouterr()
    bad = [
        (["train", "vsml", "--set", "train.stepz=3"], "'train.stepz'"),
        (["train", "vsml", "--set", "task.num_classes=12"], "'task.num_classes'"),
        (["train", "vsml", "--set", "task.dataset=mnist", "--set", "task.root=/nonexistent"], "/nonexistent"),
        (["train", "nosuchmethod"], "unknown method 'nosuchmethod' (known: "),
        (["train", "vsml", "--task", "nosuchtask"], "--task 'nosuchtask': vsml trains on streams"),
        (["train", "vsml", "--set", "eval.rnn_hiden=3"], "'eval.rnn_hiden'"),
    ]
    for argv, message in bad:
        assert cli([*argv, "--out", str(tmp_path / "x")]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_list_shows_methods_tasks_and_configs(capsys):
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    assert "vsml:" in out and "streams (streams)" in out and "paper, quick" in out


def test_the_command_keeps_freed_memory_except_when_benchmarking(monkeypatch, capsys):
    from metalearn_ext import allocator, cli as command

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(command, "_bench", lambda args: calls.append("bench") or 0)
    assert cli(["list"]) == 0 and calls == ["kept"]
    assert cli(["bench"]) == 0 and calls == ["kept", "bench"]  # the benchmark times both settings itself


def test_cosine_schedule_sets_adams_rate_at_every_step_and_resumes_on_it(tmp_path):
    import math

    cfg = tiny_config(train={"lr": 0.01, "lr_schedule": "cosine", "lr_final": 0.001, "steps": 4})
    t = Trainer(cfg)
    seen = []
    for _ in range(4):
        t.step()
        seen.append(t.optimizer.param_groups[0]["lr"])
    want = [0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert seen == pytest.approx(want) and seen[0] == pytest.approx(0.01) and seen == sorted(seen, reverse=True)
    assert cfg.train.learning_rate(4) == pytest.approx(0.001) == cfg.train.learning_rate(9)
    const = tiny_config(train={"lr": 0.01})
    assert [const.train.learning_rate(s) for s in (0, 3, 100)] == [0.01] * 3
    # a run stopped at step 2 and resumed ends where the uninterrupted one does
    full = tiny_config(train={"lr": 0.01, "lr_schedule": "cosine", "steps": 4, "checkpoint_every": 2})
    assert run_training(full, tmp_path / "full", log=quiet) == EXIT_OK
    split = tmp_path / "split"
    split.mkdir()
    part = Trainer(full)
    part.step(), part.step()
    save_checkpoint(split / "checkpoint.pt", part.state_dict())
    (split / "config.yaml").write_text(yaml.safe_dump(full.to_dict()))
    assert run_training(full, tmp_path / "split", resume=True, log=quiet) == EXIT_OK
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert torch.equal(_params(a), _params(b))


def test_weight_decay_is_adamw_and_shrinks_the_parameters_beyond_adam():
    plain, decayed = Trainer(tiny_config(train={"lr": 0.01})), Trainer(tiny_config(train={"lr": 0.01,
                                                                                          "weight_decay": 5.0}))
    assert type(plain.optimizer) is torch.optim.Adam and type(decayed.optimizer) is torch.optim.AdamW
    assert decayed.optimizer.param_groups[0]["weight_decay"] == 5.0
    assert torch.equal(_params(plain.state_dict()), _params(decayed.state_dict()))  # same start
    for _ in range(3):
        plain.step(), decayed.step()
    # the same gradients at step 1; AdamW then also multiplies every parameter by (1 - lr * wd) per step
    assert _params(decayed.state_dict()).norm() < _params(plain.state_dict()).norm()


@pytest.mark.parametrize("train, key", [({"lr_schedule": "linear"}, "train.lr_schedule"),
                                        ({"lr": 0.01, "lr_final": 0.02}, "train.lr_final"),
                                        ({"lr_final": -1.0}, "train.lr_final"),
                                        ({"weight_decay": -0.1}, "train.weight_decay"),
                                        ({"weight_decay": float("nan")}, "train.weight_decay")])
def test_bad_schedule_keys_name_the_key(train, key):
    with pytest.raises(ConfigError, match=key):
        tiny_config(train=train)


def test_a_checkpoint_from_before_a_config_key_existed_loads_as_its_default(tmp_path):
    """A key added to a method's config later is absent from older checkpoints: it counts as its
    default there (old runs stay loadable), and as a change if the run now sets it otherwise."""
    import dataclasses

    cfg = tiny_config(train={"steps": 2})
    out = tmp_path / "run"
    assert run_training(cfg, out, log=quiet) == EXIT_OK
    model = cfg.sections["model"]
    key = next(f.name for f in dataclasses.fields(model)
               if f.default is not dataclasses.MISSING and getattr(model, f.name) == f.default)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    del ckpt["config"]["model"][key]
    save_checkpoint(out / "checkpoint.pt", ckpt)
    assert run_training(tiny_config(train={"steps": 3}), out, resume=True, log=quiet) == EXIT_OK
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3
    ckpt = load_checkpoint(out / "checkpoint.pt")
    del ckpt["config"]["model"][key]
    ckpt["config"]["model"]["state_size"] = -1  # and a key that really differs is still named
    save_checkpoint(out / "checkpoint.pt", ckpt)
    with pytest.raises(CheckpointError, match=r"differs in: model\.state_size\)"):
        run_training(tiny_config(train={"steps": 4}), out, resume=True, log=quiet)


def test_ema_averages_the_weights_and_evaluation_loads_the_average(tmp_path):
    from metalearn_ext.train.run_dir import load_run, load_trainer

    cfg = tiny_config(train={"lr": 0.05, "ema": 0.2, "steps": 3, "checkpoint_every": 1})
    t = Trainer(cfg)
    want = {k: v.clone() for k, v in t.model.state_dict().items()}
    for s in (1, 2, 3):
        t.step()
        d = min(0.2, (1 + s) / (10 + s))  # 0.18, then 0.2
        want = {k: d * want[k] + (1 - d) * v if v.is_floating_point() else v.clone()
                for k, v in t.model.state_dict().items()}
    for k in want:
        torch.testing.assert_close(t.ema[k], want[k])
    assert not torch.equal(_params({"model": t.ema}), _params(t.state_dict()))
    # the run: the checkpoint keeps the raw weights (to resume) and the average; evaluation loads the average
    assert run_training(cfg, tmp_path / "run", log=quiet) == EXIT_OK
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert torch.equal(_params(ckpt), _params(t.state_dict()))
    assert torch.equal(_params({"model": ckpt["ema"]}), _params({"model": t.ema}))
    assert torch.equal(_params({"model": load_run(tmp_path / "run").state_dict()}), _params({"model": t.ema}))
    assert torch.equal(_params({"model": load_trainer(tmp_path / "run").model.state_dict()}), _params({"model": t.ema}))
    # resumed from step 1, the average ends where the uninterrupted one does
    one = tiny_config(train={"lr": 0.05, "ema": 0.2, "steps": 1, "checkpoint_every": 1})
    assert run_training(one, tmp_path / "split", log=quiet) == EXIT_OK
    resumed = resume_config(tmp_path / "split", "vsml", ["train.steps=3"])
    assert run_training(resumed, tmp_path / "split", resume=True, log=quiet) == EXIT_OK
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert torch.equal(_params({"model": split["ema"]}), _params({"model": ckpt["ema"]}))
    with pytest.raises(ConfigError, match="train.ema"):
        resume_config(tmp_path / "split", "vsml", ["train.steps=4", "train.ema=0.5"])


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), 2.0])
def test_bad_ema_names_the_key(bad):
    with pytest.raises(ConfigError, match="train.ema"):
        tiny_config(train={"ema": bad})
