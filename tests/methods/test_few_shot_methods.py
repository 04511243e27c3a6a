"""ProtoNet and MAML through the shared run loop, by learning: a short run on 5-way episodes of
held-out 8×8 digits (or held-out Omniglot characters) beats chance by a margin; `eval` writes the
protocol's intervals; `load_run` + `predict` is the whole path from a run to predictions on new
images; the CLI's bad input; 1 and 2 gloo processes give the same MAML parameters."""
import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import metalearn_ext
from metalearn_ext.config import ConfigError
from metalearn_ext.methods import get_method
from metalearn_ext.train.config import config_from_dict, load_config
from metalearn_ext.train.loop import EXIT_OK, Trainer, run_training
from tests.train.helpers import cli

OMNIGLOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"
quiet = lambda m: None  # noqa: E731

DIGITS = {"dataset": "digits", "root": None, "image_size": 8, "n_way": 5, "k_shot": 1, "n_query": 5,
          "rotations": False, "test_rotations": False}


def _digits_config(method: str, model=None, train=None, eval_=None):
    d = {"task": DIGITS,
         "model": {"depth": 3, "hidden": 16} if method == "protonet" else {"hidden": 16, "inner_lr": 0.4},
         "train": {"steps": 60, "meta_batch": 4, "lr": 3e-3, "progress": False, "num_threads": 1,
                   "checkpoint_every": 30},
         "eval": {"episodes": 100, "n_query": 5, "settings": [[5, 1]], "check_episodes": 20}}
    for k, v in (("model", model), ("train", train), ("eval", eval_)):
        d[k].update(v or {})
    return config_from_dict(get_method(method), d)



@pytest.mark.parametrize("method, model", [("protonet", None), ("maml", None), ("maml", {"first_order": True})],
                         ids=["protonet", "maml", "fomaml"])
def test_short_run_beats_chance_on_held_out_digits(tmp_path, method, model):
    """Seen (5-way 1-shot on the 5 held-out digits, chance 20%): ProtoNet ~70%, MAML ~60%."""
    cfg = _digits_config(method, model)
    assert run_training(cfg, tmp_path, log=quiet) == EXIT_OK
    check = json.loads((tmp_path / "eval.json").read_text())
    assert check["n_way"] == 5 and check["episodes"] == 20
    res = get_method(method).evaluate(tmp_path, [], log=quiet, progress=False)
    (r,) = res["results"]
    assert r["episodes"] == 100 and r["lo"] <= r["mean"] <= r["hi"]
    assert r["mean"] > 0.4, r  # chance 0.2
    assert json.loads((tmp_path / "few_shot.json").read_text())["results"] == res["results"]
    assert "5-way 1-shot" in get_method(method).format_results(res)


def test_training_with_more_ways_than_held_out_classes_checks_at_the_held_out_classes(tmp_path):
    """60-way training against 50 held-out characters once ended in a traceback after training."""
    cfg = config_from_dict(get_method("protonet"), {
        "task": {**DIGITS, "n_way": 6, "test_classes": 4}, "model": {"depth": 3, "hidden": 16},
        "train": {"steps": 2, "progress": False, "num_threads": 1},
        "eval": {"episodes": 10, "n_query": 5, "settings": [[4, 1]], "check_episodes": 10}})
    lines = []
    assert run_training(cfg, tmp_path, log=lines.append) == EXIT_OK
    assert json.loads((tmp_path / "eval.json").read_text())["n_way"] == 4
    assert any("training used 6 ways; the held-out split has 4 classes" in line for line in lines), lines


def test_load_run_gives_the_trained_model_for_a_users_own_episodes(tmp_path):
    cfg = _digits_config("protonet", train={"steps": 2})
    assert run_training(cfg, tmp_path, log=quiet) == EXIT_OK
    model = metalearn_ext.load_run(tmp_path)
    assert not model.training and model.config == cfg
    trainer = Trainer(cfg)
    b = trainer.task.sample(range(3), seed=0, step=0, split="test")
    with torch.no_grad():
        logits = model.predict(b.support_images[0], b.support_labels[0], b.query_images[0])
    assert logits.shape == (25, 5)


@pytest.mark.skipif(not (OMNIGLOT / "images_background_small1.zip").is_file(),
                    reason=f"Omniglot small archives not found at {OMNIGLOT}")
def test_from_a_run_directory_to_predictions_on_png_drawings(tmp_path):
    """load_run + predict + load_omniglot_image: a trained Omniglot model on PNG files of one's own."""
    import zipfile

    from metalearn_ext.data import load_omniglot_image

    cfg = load_config(get_method("protonet"), "quick", [f"task.root={OMNIGLOT}", "task.n_way=5", "task.k_shot=1",
                                                         "task.n_query=1", "train.steps=2", "train.progress=false",
                                                         "eval.check_episodes=0", "model.hidden=8"])
    assert run_training(cfg, tmp_path / "run", log=quiet) == EXIT_OK
    with zipfile.ZipFile(OMNIGLOT / "images_background_small1.zip") as z:
        pngs = sorted(n for n in z.namelist() if n.endswith(".png"))
        chars = sorted({str(Path(n).parent) for n in pngs})[:3]
        files = []
        for c in chars:
            for n in [p for p in pngs if str(Path(p).parent) == c][:2]:
                files.append(tmp_path / Path(n).name)
                files[-1].write_bytes(z.read(n))
    model = metalearn_ext.load_run(tmp_path / "run")
    size = model.config.task.image_size  # the run's own input size (quick.yaml's)
    images = torch.stack([load_omniglot_image(f, size) for f in files])
    assert images.shape == (6, 1, size, size)
    with torch.no_grad():
        logits = model.predict(images[0::2], torch.arange(3), images[1::2])
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()


def test_bad_input_names_the_key_or_number(tmp_path, capsys):
    with pytest.raises(ConfigError, match="'model.state_size' is a key of vsml, not of protonet"):
        _digits_config("protonet", model={"state_size": 4})
    with pytest.raises(ConfigError, match="'task.name': protonet trains on episodes"):
        config_from_dict(get_method("protonet"), {"task": {"name": "streams"}})
    with pytest.raises(ConfigError, match="'train.optimizer': maml supports gradient"):
        _digits_config("maml", train={"optimizer": "es"})
    cfg = _digits_config("protonet", eval_={"check_episodes": 0})
    trainer = Trainer(cfg)
    with pytest.raises(ValueError, match="n_way=6"):
        trainer.task.sample(range(1), seed=0, step=0, split="test", n_way=6)
    assert cli(["train", "maml", "--task", "streams", "--out", str(tmp_path)]) == 2
    assert "maml trains on episodes, sinusoid" in capsys.readouterr().err


def test_sinusoid_maml_learns_and_reports_mse_beside_the_pretrained_baseline(tmp_path):
    cfg = load_config(get_method("maml"), None, ["train.steps=1500", "train.progress=false",
                                                 "eval.regression_tasks=100", "eval.pretrain_iterations=300"],
                      task="sinusoid")
    assert run_training(cfg, tmp_path, log=quiet) == EXIT_OK
    res = get_method("maml").evaluate(tmp_path, [], log=quiet, progress=False)
    maml, pre = res["results"]["maml"], res["results"]["pretrained"]
    assert maml["steps"] == [0, 1, 10]
    # seen after 1500 meta-steps: 3.12 before adaptation, 1.10 after one step, 0.49 after ten
    # (pretrained and fine-tuned: 3.23, 3.00, 2.65)
    assert maml["mean"][1] < 0.7 * maml["mean"][0] and maml["mean"][2] < maml["mean"][1]
    assert len(pre["mean"]) == 3 and (tmp_path / "regression.json").exists()
    assert "MSE after 1 step" in get_method("maml").format_results(res)


# ---------------------------------------------------------------------------------- torch.distributed
def _worker(rank, world, port, out_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = Trainer(_digits_config("maml", train={"meta_batch": 5}))
        losses = [trainer.step().meta_loss for _ in range(3)]
        if rank == 0:
            theta = torch.nn.utils.parameters_to_vector(trainer.model.parameters()).detach()
            torch.save({"theta": theta, "losses": losses}, out_path)
    finally:
        dist.destroy_process_group()


def _run(world, path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, port, str(path)), nprocs=world, join=True)
    return torch.load(path)


def test_maml_one_vs_two_processes_agree(tmp_path):
    """The meta-batch of 5 tasks split 3 / 2 over two gloo processes, the meta-gradient all-reduced:
    the same losses and parameters as one process, to float32 rounding."""
    one, two = _run(1, tmp_path / "one.pt"), _run(2, tmp_path / "two.pt")
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6)
    lr = _digits_config("maml").train.lr
    diff = (two["theta"] - one["theta"]).abs()
    close = diff <= 1e-5 + 1e-4 * one["theta"].abs()
    # Adam's first steps move a parameter with a rounding-level gradient by up to lr either way
    assert close.float().mean() >= 0.99 and diff.max() <= 2 * lr * 3, (diff.max(), close.float().mean())
    assert one["losses"][0] != one["losses"][2]


def test_maml_adapt_norm_false_leaves_batch_norm_to_the_outer_loop():
    method = get_method("maml")
    shapes = {"image_shape": [1, 8, 8], "n_way": 5}
    both = method.build_model(_digits_config("maml"), shapes)
    outer = method.build_model(_digits_config("maml", model={"adapt_norm": False}), shapes)
    norms = {n for n, p in outer.module.named_parameters() if "norm" in type(
        outer.module.get_submodule(n.rsplit(".", 1)[0])).__name__.lower()}
    assert norms and norms <= set(both.adapted_names) and not norms & set(outer.adapted_names)
    assert set(outer.adapted_names) | norms == set(both.adapted_names)
    assert {n for n, _ in outer.named_parameters()} == {n for n, _ in both.named_parameters()}  # all meta-learned
