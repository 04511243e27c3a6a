"""Accuracy by instance: hand-computed values, a perfect one-shot memory on real label-offset
episodes, episodes missing an instance, the paper's table columns, bad input."""
import math

import pytest
import torch

from metalearn_ext.data import LabelOffsetSampler, load_digits
from metalearn_ext.evaluate import accuracy_by_instance, by_instance_table, interval


def test_hand_computed():
    # two episodes of two classes shown twice: instance 0 0 1 1
    instance = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]])
    correct = torch.tensor([[True, False, True, True], [False, True, False, False]])
    r = accuracy_by_instance(correct, instance)
    assert r["instance"] == [1, 2] and r["episodes"] == [2, 2]
    first, second = interval(torch.tensor([0.5, 0.0])), interval(torch.tensor([1.0, 0.5]))
    assert r["mean"] == [first["mean"], second["mean"]] == [0.25, 0.75]
    assert r["half"] == [first["half"], second["half"]] and r["lo"][1] == second["lo"]


def test_perfect_memory_on_label_offset_episodes():
    """A learner that is right from a class's second showing on: 0 at the 1st instance, 1 after."""
    batch = LabelOffsetSampler(load_digits(), n_way=5, examples_per_class=10, seed=0).sample(64)
    r = accuracy_by_instance(batch.instance > 0, batch.instance)
    assert r["instance"] == list(range(1, 11)) and r["episodes"] == [64] * 10
    assert r["mean"] == [0.0] + [1.0] * 9 and r["half"] == [0.0] * 10


def test_episodes_without_an_instance_are_left_out_of_its_interval():
    instance = torch.tensor([[0, 1, 2], [0, 0, 1]])
    correct = torch.tensor([[1, 1, 1], [0, 1, 0]])
    r = accuracy_by_instance(correct, instance)
    assert r["episodes"] == [2, 2, 1] and r["mean"] == [0.75, 0.5, 1.0] and math.isnan(r["half"][2])


def test_table_has_the_papers_columns():
    r = {"instance": list(range(1, 12)), "mean": [i / 20 for i in range(11)], "half": [0.01] * 11}
    table = by_instance_table(r)
    assert table.splitlines()[0] == "| 1st | 2nd | 3rd | 4th | 5th | 10th |"
    assert table.splitlines()[2].startswith("| 0.0 ± 1.0 | 5.0 ± 1.0 |") and "| 45.0 ± 1.0 |" in table
    assert "11th" in by_instance_table(r, (11, 21, 22))  # and 21/22 are simply absent


@pytest.mark.parametrize("correct, instance, match", [
    (torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.long), "both be"),
    (torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long), "both be"),
    (torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3), "integer"),
    (torch.ones(2, 3, dtype=torch.bool), -torch.ones(2, 3, dtype=torch.long), "≥ 0"),
])
def test_bad_input(correct, instance, match):
    with pytest.raises(ValueError, match=match):
        accuracy_by_instance(correct, instance)
