"""BLUR on the run loop: a short meta-training run learns (held-out accuracy after 10 steps beats the
untrained genome and chance by a margin), truncation and the curriculum, ES members = the shared
genome, resume is exact, the baselines learn, `metalearn train | eval | plot blur` via the CLI."""
import json

import pytest
import torch

from metalearn_ext.config import ConfigError
from metalearn_ext.evaluate.batch_baselines import baseline_query_accuracy
from metalearn_ext.evaluate.query_after_steps import (
    blur_accuracy_standardized,
    heldout_set,
)
from metalearn_ext.methods import get_method
from metalearn_ext.methods.base import Batch
from metalearn_ext.methods.blur import item_generators, unroll_length
from metalearn_ext.tasks.seeds import EVAL, TEST, derive_seed
from metalearn_ext.train.checkpoint import load_checkpoint
from metalearn_ext.train.config import load_config
from metalearn_ext.train.loop import EXIT_OK, Trainer, resume_config, run_training
from tests.train.helpers import cli

quiet = lambda m: None
METHOD = get_method("blur")
TINY_SETS = ["model.hidden=[4]", "task.image_size=4", "task.steps=3", "task.query=8", "train.unroll=3",
             "train.meta_batch=2", "train.population=4", "train.steps=4", "train.checkpoint_every=2",
             "train.eval_tasks=2", "train.progress=false", "train.num_threads=1"]
TINY_EVAL_SETS = ["eval.steps=[1, 3]", "eval.tasks=3", "eval.tune_tasks=2", "eval.query=8",
                  "eval.lr_grid=[0.1, 1.0]"]


def tiny(*sets):
    return load_config(METHOD, "quick", TINY_SETS + TINY_EVAL_SETS + list(sets))


def _held_out_accuracy(trainer, steps_at, n=64):
    """As `metalearn eval` scores it: held-out classes standardized with their own statistics."""
    b = heldout_set(trainer.cfg, trainer.task).tasks(123, TEST, n, steps_at[-1], 16, 100)
    gens = item_generators(derive_seed(123, EVAL), TEST, range(n))
    return blur_accuracy_standardized(trainer.model, b, steps_at, gens).mean(1)


@pytest.mark.slow
def test_short_meta_training_learns_a_rule_for_unseen_digits():
    """The quick config for 300 meta-steps (~30 s): held-out digits 5–9, accuracy after 10 learning
    steps beats the untrained genome by 0.1 and chance (0.2) by 0.3."""
    trainer = Trainer(load_config(METHOD, "quick", ["train.progress=false"]))
    before = float(_held_out_accuracy(trainer, [10])[0])
    losses = [trainer.step().meta_loss for _ in range(300)]
    after = float(_held_out_accuracy(trainer, [10])[0])
    assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30 - 0.3
    assert after > before + 0.1, (before, after)
    assert after > 0.5, after


def test_unroll_length_curriculum_and_config_checks():
    t = tiny("train.unroll=2", "train.unroll_increment=1", "train.unroll_every=10").train
    assert [unroll_length(t, s, 3) for s in (0, 9, 10, 25, 1000)] == [2, 2, 3, 3, 3]
    with pytest.raises(ConfigError, match="task.steps"):
        tiny("train.unroll=5")
    with pytest.raises(ConfigError, match="eval.steps"):
        tiny("eval.steps=[5, 1]")
    with pytest.raises(ConfigError, match="test_classes"):
        tiny("task.test_classes=[5, 6]")


def test_truncation_yields_one_update_per_segment():
    cfg = tiny("task.steps=5", "train.unroll=5", "train.truncation=2")
    trainer = Trainer(cfg)
    batch = Batch(trainer.task.sample([0, 1], seed=0, step=0), [0, 1], 0, 0, 2)
    segments = list(METHOD.meta_loss(trainer.model, batch, cfg))
    assert [w for _, w in segments] == pytest.approx([0.4, 0.4, 0.2])
    assert all(loss.requires_grad for loss, _ in segments)
    assert trainer.step().applied


@pytest.mark.parametrize("loss_at", ["end", "every_step"])
def test_es_members_equal_to_the_genome_give_its_loss(loss_at):
    cfg = tiny(f"train.query_loss_at={loss_at}")
    trainer = Trainer(cfg)
    model = trainer.model
    batch = Batch(trainer.task.sample([0, 1], seed=0, step=0), [0, 1], 0, 0, 2)
    with torch.no_grad():
        (loss, _), = METHOD.meta_loss(model, batch, cfg)
        theta = torch.nn.utils.parameters_to_vector(model.parameters()).expand(4, -1)
        fitness = METHOD.es_fitness(model, theta, batch, cfg)
    assert fitness.shape == (4,)
    torch.testing.assert_close(fitness[0::2], fitness[1::2])
    torch.testing.assert_close(fitness.mean(), loss)
    es = Trainer(tiny("train.optimizer=es"))
    assert es.step().applied


def test_resume_continues_exactly(tmp_path):
    full, half = tiny(), tiny("train.steps=2")
    assert run_training(full, tmp_path / "full", log=quiet) == EXIT_OK
    assert run_training(half, tmp_path / "split", log=quiet) == EXIT_OK
    resumed = resume_config(tmp_path / "split", "blur", ["train.steps=4"])
    assert resumed == full
    assert run_training(resumed, tmp_path / "split", resume=True, log=quiet) == EXIT_OK
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("full", "split"))
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "full" / "eval.json").read_text())["steps"] == [1, 3]


def test_tuned_sgd_baseline_learns_the_digit_tasks():
    trainer = Trainer(tiny("task.image_size=8"))
    b = trainer.task.sample(range(16), seed=0, step=0, split="test", steps=25, query=50)
    mean, std = trainer.task.train.input_stats()
    z = lambda x: (x - mean) / std
    acc = baseline_query_accuracy(z(b.inputs), b.labels, z(b.query_inputs), b.query_labels, [64, 5],
                                  optimizer="sgd", lr=0.3, steps_at=[1, 25],
                                  generator=torch.Generator().manual_seed(0)).mean(1)
    assert acc[1] > 0.8 and acc[1] > acc[0], acc
    with pytest.raises(ValueError, match="steps_at"):
        baseline_query_accuracy(z(b.inputs), b.labels, z(b.query_inputs), b.query_labels, [64, 5],
                                optimizer="sgd", lr=0.3, steps_at=[30], generator=torch.Generator())


def test_cli_train_eval_plot(tmp_path, capsys):
    out = str(tmp_path / "run")
    sets = [a for s in TINY_SETS + TINY_EVAL_SETS for a in ("--set", s)]
    assert cli(["train", "blur", *sets, "--out", out]) == 0
    assert cli(["eval", out]) == 0
    res = json.loads((tmp_path / "run" / "meta_test.json").read_text())
    ts = res["task_sets"]["heldout"]
    assert set(ts["learners"]) == {"blur", "sgd-linear", "momentum-linear", "adam-linear", "sgd-mlp",
                                   "momentum-mlp", "adam-mlp"}
    assert len(ts["blur_minus_best_baseline"]) == 2 and "unseen" in {**res["task_sets"], **res["skipped"]}
    assert "BLUR - best" in capsys.readouterr().out
    assert cli(["plot", out]) == 0
    assert (tmp_path / "run" / "query_accuracy.png").stat().st_size > 0
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 0
    model = __import__("metalearn_ext").load_run(out)
    x = torch.rand(2, 3, 4, 16)
    assert model.learn(x, torch.randint(5, (2, 3, 4))).shape == (2, 3, 4, 5)


def test_task_family_draws_items_from_their_own_seeds():
    task = METHOD.build_task(tiny())
    both = task.sample([0, 1], seed=0, step=5)
    second = task.sample([1], seed=0, step=5)
    assert both.inputs.shape == (2, 3, 16, 16) and both.query_labels.shape == (2, 8)
    assert torch.equal(both.inputs[1:], second.inputs) and torch.equal(both.query_labels[1:], second.query_labels)
    assert set(both.labels.unique().tolist()) <= set(range(5))
