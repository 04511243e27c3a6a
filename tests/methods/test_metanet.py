"""MetaNet through the shared run loop, by learning: a short run on 5-way 1-shot episodes of the
held-out 8×8 digits beats chance by a margin; exact resume; `metalearn train | eval | plot` with
ProtoNet's accuracy beside MetaNet's; `load_run` + `predict`; bad config values name the key."""
import json

import pytest
import torch
import yaml

import metalearn_ext
from metalearn_ext.config import ConfigError
from metalearn_ext.methods import get_method
from metalearn_ext.methods.metanet import COMPARISON_PNG
from metalearn_ext.train.checkpoint import load_checkpoint
from metalearn_ext.train.config import config_from_dict
from metalearn_ext.train.loop import EXIT_OK, Trainer, run_training
from tests.train.helpers import cli

quiet = lambda m: None  # noqa: E731

DIGITS = {"dataset": "digits", "root": None, "image_size": 8, "n_way": 5, "k_shot": 1, "n_query": 5,
          "rotations": False, "test_rotations": False}


def _sections(model=None, train=None, eval_=None) -> dict:
    d = {"task": dict(DIGITS),
         "model": {"max_way": 5, "depth": 3, "hidden": 16, "embed": 32, "fast_layers": 2},
         "train": {"steps": 200, "meta_batch": 2, "lr": 3e-3, "progress": False, "num_threads": 1,
                   "checkpoint_every": 100},
         "eval": {"episodes": 100, "n_query": 5, "settings": [[5, 1]], "check_episodes": 20}}
    for k, v in (("model", model), ("train", train), ("eval", eval_)):
        d[k].update(v or {})
    return d


def _config(**kw):
    return config_from_dict(get_method("metanet"), _sections(**kw))


def test_short_run_beats_chance_on_held_out_digits(tmp_path):
    """Seen: 45.9 ± 2.2% 5-way 1-shot on the 5 held-out digits after 200 meta-steps (chance 20%; the
    training loss is near 0 by then: five training digits are few to generalize from)."""
    assert run_training(_config(), tmp_path, log=quiet) == EXIT_OK
    check = json.loads((tmp_path / "eval.json").read_text())
    assert check["n_way"] == 5 and check["episodes"] == 20
    res = get_method("metanet").evaluate(tmp_path, [], log=quiet, progress=False)
    (r,) = res["results"]
    assert r["episodes"] == 100 and r["lo"] <= r["mean"] <= r["hi"]
    assert r["mean"] > 0.35, r  # chance 0.2, the interval's half-width ~0.02
    assert "5-way 1-shot" in get_method("metanet").format_results(res)


def test_resume_continues_exactly(tmp_path):
    full = _config(train={"steps": 4, "checkpoint_every": 2}, eval_={"check_episodes": 0})
    assert run_training(full, tmp_path / "full", log=quiet) == EXIT_OK
    half = _config(train={"steps": 2, "checkpoint_every": 2}, eval_={"check_episodes": 0})
    assert run_training(half, tmp_path / "split", log=quiet) == EXIT_OK
    assert cli(["train", "metanet", "--out", str(tmp_path / "split"), "--resume", "--set", "train.steps=4"]) == 0
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_cli_train_eval_plot_beside_protonet_and_load_run(tmp_path, capsys):
    ours, theirs = tmp_path / "metanet", tmp_path / "protonet"
    cfg_file = tmp_path / "metanet.yaml"
    cfg_file.write_text(yaml.safe_dump(_sections(train={"steps": 3}, eval_={"episodes": 10, "check_episodes": 0})))
    assert cli(["train", "metanet", "--config", str(cfg_file), "--out", str(ours)]) == 0
    proto = {"task": DIGITS, "model": {"depth": 3, "hidden": 8},
             "train": {"steps": 2, "meta_batch": 1, "progress": False, "num_threads": 1},
             "eval": {"episodes": 10, "n_query": 5, "settings": [[5, 1]], "check_episodes": 0}}
    assert run_training(config_from_dict(get_method("protonet"), proto), theirs, log=quiet) == EXIT_OK
    assert cli(["eval", str(theirs)]) == 0
    assert cli(["eval", str(ours), "--set", f"eval.compare_with={theirs}"]) == 0
    capsys.readouterr()
    assert cli(["plot", str(ours)]) == 0
    out = capsys.readouterr().out
    assert COMPARISON_PNG in out and (ours / COMPARISON_PNG).stat().st_size > 1000
    assert cli(["eval", str(ours), "--set", f"eval.compare_with={ours}"]) == 0  # not a ProtoNet run
    assert cli(["plot", str(ours)]) == 2
    assert "not a protonet one" in capsys.readouterr().err

    model = metalearn_ext.load_run(ours)
    assert not model.training and model.config.method == "metanet"
    b = Trainer(model.config).task.sample(range(1), seed=0, step=0, split="test")
    with torch.no_grad():
        logits = model.predict(b.support_images[0], b.support_labels[0], b.query_images[0])
    assert logits.shape == (25, 5) and torch.isfinite(logits).all()


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match="'model.max_way': 5 is fewer than the 20 ways"):
        _config(eval_={"settings": [[20, 1]]})
    with pytest.raises(ConfigError, match="'model.fast_layers'"):
        _config(model={"fast_layers": 9})
    with pytest.raises(ConfigError, match="'model.gradients'"):
        _config(model={"gradients": "twice"})
    with pytest.raises(ConfigError, match="'model.attention_scale': must be positive"):
        _config(model={"attention_scale": 0.0})
    with pytest.raises(ConfigError, match="'model.learn_attention_scale'"):
        _config(model={"learn_attention_scale": "yes"})
    with pytest.raises(ConfigError, match="'model.center_keys'"):
        _config(model={"center_keys": 2})
    with pytest.raises(ConfigError, match="'model.anchor_fast_weights'"):
        _config(model={"anchor_fast_weights": "yes"})
    assert _config(model={"anchor_fast_weights": -1}).model.anchor_fast_weights == -1
    assert _config().train.clip == 10.0  # the paper's clip by default


def test_learned_attention_scale_is_built_from_the_config_and_trained(tmp_path):
    cfg = _config(model={"attention_scale": 5.0, "learn_attention_scale": True},
                  train={"steps": 3, "lr": 0.05}, eval_={"check_episodes": 0})
    assert run_training(cfg, tmp_path, log=quiet) == EXIT_OK
    scale = load_checkpoint(tmp_path / "checkpoint.pt")["model"]["log_attention_scale"].exp().item()
    assert scale != pytest.approx(5.0, abs=1e-6) and 0.5 < scale < 50  # moved by three Adam steps of 0.05
    assert metalearn_ext.load_run(tmp_path).attention_scale.item() == pytest.approx(scale)
