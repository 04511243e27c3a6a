"""CNP, NP and ANP through the shared run loop: a short CNP run improves the held-out
log-likelihood on GP curves by a clear margin (tested by learning); `train` / `eval` / `plot`
through the CLI on every task of the family; the model back from `load_run`; bad config."""
import json

import pytest
import torch

import metalearn_ext
from metalearn_ext.config import ConfigError
from metalearn_ext.evaluate import log_likelihood_vs_oracle
from metalearn_ext.methods import get_method
from metalearn_ext.train.config import config_from_dict, load_config
from metalearn_ext.train.loop import EXIT_OK, Trainer, run_training
from tests.train.helpers import cli

quiet = lambda m: None  # noqa: E731
TINY = ["model.hidden=[32,32]", "model.decoder_hidden=[32]", "train.progress=false", "train.meta_batch=8",
        "eval.curves=64", "eval.check_curves=32", "eval.num_z=4", "eval.plot_curves=2"]


@pytest.mark.slow
def test_a_short_cnp_run_learns_the_gp_curves(tmp_path):
    """Seen: −1.5 nats per target point untrained, −1.1 after 400 steps; the bar is at 1500 steps (~10-25 s)."""
    method = get_method("cnp")
    cfg = config_from_dict(method, {
        "model": {"hidden": [64, 64, 64], "decoder_hidden": [64, 64]},
        "task": {"name": "gp", "max_context": 20, "max_extra_target": 20},
        "train": {"steps": 1500, "meta_batch": 16, "lr": 2e-3, "progress": False, "num_threads": 1,
                  "checkpoint_every": 1500},
        "eval": {"check_curves": 256, "batch_size": 128}})
    untrained = Trainer(cfg)
    untrained.model.eval()
    before = log_likelihood_vs_oracle(method.predict(untrained.model, cfg), untrained.task, curves=256,
                                      batch_size=128)
    assert run_training(cfg, tmp_path, log=quiet) == EXIT_OK
    after = json.loads((tmp_path / "eval.json").read_text())
    assert after["oracle"]["mean"] == pytest.approx(before["oracle"]["mean"])  # the same held-out curves
    assert after["model"]["mean"] > before["model"]["mean"] + 0.5, (before["model"], after["model"])
    assert after["gap"]["mean"] < 0.75 * before["gap"]["mean"]


@pytest.mark.parametrize("method", ["np", "anp"])
def test_train_eval_plot_on_gp_curves(tmp_path, method, capsys):
    out = tmp_path / "run"
    assert cli(["train", method, "--task", "gp", "--out", str(out), "--set", "train.steps=3",
                *[a for s in TINY for a in ("--set", s)]]) == 0
    assert cli(["eval", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| context points | curves | model | oracle | gap | gap, extra targets |" in text
    res = json.loads((out / "likelihood.json").read_text())
    r = res["results"]["likelihood"]
    assert res["method"] == method and r["curves"] == 64 and "extra" in r and r["gap"]["mean"] > 0
    assert cli(["plot", str(out)]) == 0
    for png in ("training_curve.png", "np_by_context.png", "np_bands.png"):
        assert (out / png).stat().st_size > 1000, png


@pytest.mark.parametrize("method, config", [("cnp", "image_digits"), ("anp", "sinusoid")])
def test_image_completion_and_sinusoids(tmp_path, method, config):
    out = tmp_path / "run"
    cfg = load_config(get_method(method), config, ["train.steps=3", *TINY, "eval.batch_size=16"])
    assert run_training(cfg, out, log=quiet) == EXIT_OK
    res = get_method(method).evaluate(out, [], log=quiet, progress=False)
    r = res["results"]["likelihood"]
    assert "gap" not in r and r["curves"] == 64
    if config == "sinusoid":
        assert res["results"]["mse"]["k_shot"] == 10 and res["results"]["mse"]["n_query"] == 100
        assert "query MSE of the predictive mean" in get_method(method).format_results(res)
    paths = get_method(method).plot(out, quiet)
    assert {p.name for p in paths} >= {"training_curve.png", "np_by_context.png",
                                       "np_completion.png" if config == "image_digits" else "np_bands.png"}


def test_load_run_gives_a_model_for_a_users_own_loop(tmp_path):
    cfg = load_config(get_method("anp"), "gp", ["train.steps=2", *TINY, "eval.check_curves=0", "model.heads=4"])
    assert run_training(cfg, tmp_path, log=quiet) == EXIT_OK
    model = metalearn_ext.load_run(tmp_path)
    assert isinstance(model, metalearn_ext.nn.ANP) and not model.training
    x = torch.linspace(-2, 2, 5)[None, :, None]
    with torch.no_grad():
        d = model(x, torch.sin(x), torch.linspace(-2, 2, 11)[None, :, None], num_z=3)
    assert d.mean.shape == (3, 1, 11, 1)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.heads"):
        load_config(get_method("anp"), "gp", ["model.heads=3"])
    with pytest.raises(ConfigError, match=r"model\.hidden"):
        load_config(get_method("cnp"), "gp", ["model.hidden=[]"])
    with pytest.raises(ConfigError, match=r"model\.z_dim"):
        load_config(get_method("np"), "gp", ["model.z_dim=0"])
    with pytest.raises(ConfigError, match=r"task\.kernel"):
        load_config(get_method("cnp"), "gp", ["task.kernel=rbf"])
    with pytest.raises(ConfigError, match=r"task\.name"):
        load_config(get_method("cnp"), None, ["task.name=episodes"])
    assert cli(["train", "np", "--task", "streams", "--out", "/nonexistent"]) == 2
