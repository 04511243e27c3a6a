"""The online protocol (VSML's meta-test), its baselines, the plots and the demo: learning above
chance, documented keys, files, a re-runnable demo."""
import json
import math

import pytest
import torch

from metalearn_ext.train.checkpoint import load_checkpoint

from metalearn_ext.evaluate import online
from metalearn_ext.evaluate.meta_rnn import train_meta_rnn
from metalearn_ext.evaluate.online import BASELINES, LEARNERS, WINDOWS, interval, run_meta_test, windows
from metalearn_ext.evaluate.online_baselines import online_baseline
from metalearn_ext.evaluate.online_plot import ACCURACY_PNG
from metalearn_ext.methods import get_method
from metalearn_ext.nn import MetaRNN
from metalearn_ext.tasks.streams import StreamTask
from metalearn_ext.train.config import load_config
from metalearn_ext.train.loop import EXIT_OK, run_training
from metalearn_ext.train.plot import TRAINING_PNG
from tests.train.helpers import TINY_EVAL_SETS, TINY_SETS, cli, tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cluster_streams(T=12, L=60, D=8, C=3, seed=0):
    """Streams of an easy task: C well-separated Gaussian clusters, a new set of centres per stream."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(T, C, D, generator=g) * 2
    y = torch.randint(C, (T, L), generator=g)
    x = centres.gather(1, y[..., None].expand(T, L, D)) + 0.5 * torch.randn(T, L, D, generator=g)
    return x, y


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 0.03)])
@pytest.mark.parametrize("hidden", [None, 16])
def test_online_baselines_learn_an_easy_stream_task(optimizer, lr, hidden):
    x, y = _cluster_streams()
    logits = online_baseline(x, y, 3, optimizer=optimizer, lr=lr, hidden=hidden)
    assert logits.shape == (12, 60, 3)
    correct = (logits.argmax(-1) == y).float()
    assert correct[:, 30:].mean() > 0.8  # chance 1/3
    assert correct[:, 0].mean() < 0.8  # the first prediction is made before any update


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_streams_learn_independently_with_their_own_rates(optimizer):
    x, y = _cluster_streams(T=4, L=10)
    lr = torch.tensor([0.01, 0.1, 0.3, 1.0])
    g = lambda: torch.Generator().manual_seed(5)
    together = online_baseline(x, y, 3, optimizer=optimizer, lr=lr, hidden=6, generator=g())
    # the same draw of initial parameters, then each stream on its own
    T = 4
    for t in range(T):
        alone = online_baseline(x[t : t + 1].repeat(T, 1, 1), y[t : t + 1].repeat(T, 1), 3, optimizer=optimizer,
                                lr=lr[t], hidden=6, generator=g())
        torch.testing.assert_close(together[t], alone[t], rtol=1e-5, atol=1e-6)


def test_online_baseline_rejects_bad_input():
    x, y = _cluster_streams(T=2, L=3)
    with pytest.raises(ValueError, match="optimizer"):
        online_baseline(x, y, 3, optimizer="rmsprop", lr=0.1)
    with pytest.raises(ValueError, match=r"\(T, L, D\)"):
        online_baseline(x[0], y, 3, optimizer="sgd", lr=0.1)


def test_meta_rnn_beats_chance_after_short_meta_training():
    task = StreamTask(tiny_config(task={"num_classes": 2, "episode_length": 12}).task)
    tasks, heldout = task.train, task.test
    mean, std = tasks.input_stats(0)
    model, info = train_meta_rnn(tasks, mean, std, hidden=32, steps=150, meta_batch=16, length=12, lr=1e-2,
                                 clip=25.0, seed=0)
    assert info["loss_last_tenth"] < info["loss_first_tenth"]
    x, y = heldout.streams(range(10_000, 10_064), 12)
    with torch.no_grad():
        logits, losses = model.learn((x - mean) / std, y)
    assert logits.shape == (64, 12, 2) and losses.shape == (64, 12)
    assert (logits[:, 6:].argmax(-1) == y[:, 6:]).float().mean() > 0.7  # chance 0.5


def test_meta_rnn_rejects_bad_shapes():
    m = MetaRNN(5, 3, hidden=4)
    with pytest.raises(ValueError, match=r"\(T, L, 5\)"):
        m.learn(torch.zeros(2, 4, 6), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="stream_y"):
        m.learn(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))


def test_intervals_and_windows():
    iv = interval(torch.tensor([0.0, 1.0] * 16))
    assert iv["mean"] == 0.5 and iv["lo"] < 0.5 < iv["hi"]
    assert iv["half"] == pytest.approx(2.0395 * math.sqrt(32 / 31 * 0.25) / math.sqrt(32), rel=1e-3)
    assert windows(300, 100) == (100, "first / last 100 examples")
    w, kind = windows(100, 100)
    assert w == 25 and "quarter" in kind


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(get_method("vsml"), "quick", TINY_SETS + TINY_EVAL_SETS)
    assert run_training(cfg, out, log=lambda m: None) == EXIT_OK
    res = run_meta_test(out, log=lambda m: None)
    return out, res


def test_meta_test_writes_the_documented_keys(tiny_run):
    out, res = tiny_run
    assert json.loads((out / "meta_test.json").read_text()) == json.loads(json.dumps(res))
    assert res["episodes"] == 4 and res["episode_length"] == 12 and res["window"] == 3
    assert "quarter" in res["window_kind"] and res["chance"] == pytest.approx(1 / 3)
    expected = {"heldout", "heldout-projected", "unseen"}
    assert set(res["task_sets"]) | set(res["skipped"]) == expected
    for ts in res["task_sets"].values():
        assert set(ts["learners"]) == set(LEARNERS)
        for name, v in ts["learners"].items():
            for k in WINDOWS:
                assert 0 <= v[k]["mean"] <= 1 and v[k]["lo"] <= v[k]["mean"] <= v[k]["hi"]
            assert len(v["curve"]["x"]) == len(v["curve"]["mean"]) == len(v["curve"]["half"])
            if name in BASELINES:
                assert set(v["lr"]) == set(WINDOWS) and all(lr in (0.01, 0.1, 1.0) for lr in v["lr"].values())
    assert set(res["tuning"]) == set(BASELINES) and res["meta_rnn"]["steps"] == 3
    assert (out / "meta_rnn.pt").exists()


def test_plot_writes_png_files(tiny_run):
    out, _ = tiny_run
    paths = get_method("vsml").plot(out, lambda m: None)
    assert [p.name for p in paths] == [TRAINING_PNG, ACCURACY_PNG]
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_eval_and_plot_cli_report_bad_input(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    assert cli(["eval", str(out), "--set", "model.state_size=8"]) == 2
    assert "only eval.* keys" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli(["plot", str(tmp_path / "nothing")]) == 2


def test_plot_of_an_unevaluated_run_says_why_one_plot_is_missing(tmp_path, capsys):
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    assert cli(["train", "vsml", *sets, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli(["plot", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert TRAINING_PNG in out and ACCURACY_PNG not in out
    assert "online_accuracy.png not drawn" in err and "metalearn eval" in err


def test_help_texts_print_percent_signs_once(capsys):
    for argv in (["plot", "--help"], ["eval", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit):
            cli(argv)
        out = capsys.readouterr().out
        assert "%%" not in out


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    sets = [a for s in TINY_SETS + TINY_EVAL_SETS for a in ("--set", s)]
    assert cli(["demo", "--out", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    assert "VSML" in printed and "SGD linear" in printed and "demo finished" in printed
    for name in ("checkpoint.pt", "metrics.jsonl", "meta_test.json", TRAINING_PNG, ACCURACY_PNG):
        assert (out / name).stat().st_size > 0
    without_time = lambda: {k: v for k, v in json.loads((out / "meta_test.json").read_text()).items()  # noqa: E731
                            if k != "seconds"}
    first = without_time()
    assert cli(["demo", "--out", str(out), *sets]) == 0  # the main job is re-runnable: it reuses the run
    assert "demo finished" in capsys.readouterr().out
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3 and without_time() == first
    assert cli(["demo", "--out", str(out), *sets, "--set", "model.ticks=3"]) == 2
    assert "another config" in capsys.readouterr().err


@pytest.mark.parametrize("d, key", [
    ({"eval": {"episodes": 1}}, "'eval.episodes'"),
    ({"eval": {"lr_grid": []}}, "'eval.lr_grid'"),
    ({"eval": {"lr_grid": [0.1, -1.0]}}, "'eval.lr_grid'"),
    ({"eval": {"unseen_dataset": "cifar"}}, "'eval.unseen_dataset'"),
    ({"eval": {"windw": 10}}, "'eval.windw'"),
])
def test_bad_eval_keys_name_the_key(d, key):
    from metalearn_ext.config import ConfigError
    from metalearn_ext.train.config import config_from_dict

    with pytest.raises(ConfigError, match=key):
        config_from_dict(get_method("vsml"), d)


def test_a_missing_unseen_dataset_is_skipped_with_a_note(tiny_run, monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("fashion-mnist test files not found; tried:\n  /nowhere")

    monkeypatch.setattr(online, "load_mnist", missing)
    out, _ = tiny_run
    res = run_meta_test(out, log=lambda m: None)
    assert "unseen" not in res["task_sets"] and "not installed" in res["skipped"]["unseen"]
    assert "skipped: fashion-mnist is not installed" in online.format_table(res)


def test_margins_over_seeds(tmp_path):
    from metalearn_ext.evaluate.online_seeds import margins_over_seeds

    dirs = []
    for seed, m in ((0, 0.01), (1, 0.03), (2, 0.02)):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        margin = {w: {"mean": m, "half": 0.005} for w in WINDOWS}
        (d / "meta_test.json").write_text(json.dumps({"config": {"train": {"seed": seed}},
                                                      "task_sets": {"unseen": {"vsml_minus_best_baseline": margin}}}))
        dirs.append(d)
    res = margins_over_seeds(dirs)["unseen"]["first"]
    assert res["mean"] == pytest.approx(0.02) and [s for s, _, _ in res["per_seed"]] == [0, 1, 2]
    assert res["half"] == pytest.approx(4.303 * 0.01 / math.sqrt(3), rel=1e-3)  # t(0.975, 2 dof) * sd / sqrt(n)
    with pytest.raises(FileNotFoundError, match="metalearn eval"):
        margins_over_seeds([tmp_path / "nothing", dirs[0]])


def test_margins_over_seeds_of_step_columns(tmp_path):
    """BLUR's protocol stores one margin per evaluated step count: the columns are named by N."""
    from metalearn_ext.evaluate.online_seeds import margins_over_seeds

    dirs = []
    for seed, m in ((0, -0.02), (1, 0.0), (2, 0.02)):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        margins = [{"mean": m + n / 1000, "half": 0.01} for n in (1, 10)]
        (d / "meta_test.json").write_text(json.dumps({
            "config": {"train": {"seed": seed}}, "steps": [1, 10],
            "task_sets": {"heldout": {"title": "t", "blur_minus_best_baseline": margins}}}))
        dirs.append(d)
    res = margins_over_seeds(dirs)
    assert res["learner"] == "blur" and list(res["heldout"]) == ["N=1", "N=10"]
    assert res["heldout"]["N=10"]["mean"] == pytest.approx(0.01)
    assert res["heldout"]["N=1"]["half"] == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)
