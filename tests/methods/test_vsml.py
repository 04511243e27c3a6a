"""VSML on the shared run loop behaves as it did before the runner refactor: the quick config's
first meta-steps give the losses recorded with the VSML-only trainer (commit d2c7a30)."""
import pytest
import torch

from metalearn_ext.methods import get_method
from metalearn_ext.train.config import load_config
from metalearn_ext.train.loop import Trainer

# metalearn_ext.train.runner.MetaTrainer(load_config("quick", overrides)).step().meta_loss, three times,
# one thread, at d2c7a30 (old keys: train.method=es, data.* -> task.*)
BEFORE = {
    (): [2.313795566558838, 2.3085856437683105, 2.308079481124878],
    ("train.optimizer=es",): [2.312868107110262, 2.3113388009369373, 2.309974744915962],
    ("model.backend=reference", "train.truncation=30"): [2.313826322555542, 2.3075763225555423],
}


@pytest.mark.parametrize("overrides", list(BEFORE), ids=["bptt", "es", "truncated-reference"])
def test_quick_config_first_meta_steps_match_the_old_trainer(overrides):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(load_config(get_method("vsml"), "quick", list(overrides)))
        losses = [trainer.step().meta_loss for _ in BEFORE[overrides]]
    finally:
        torch.set_num_threads(threads)
    assert losses == pytest.approx(BEFORE[overrides], rel=1e-6, abs=0)
