"""Few-shot accuracy ± 95% on held-out digit classes: exact accuracy arithmetic, a real
classifier beats chance, seeds, batch-size independence, gradients inside predict, bad output."""
import pytest
import torch
import torch.nn.functional as F

from metalearn_ext.evaluate import few_shot_accuracy, few_shot_table
from metalearn_ext.tasks import build_task
from metalearn_ext.tasks.episodes import EpisodesTaskConfig


@pytest.fixture(scope="module")
def digits():
    return build_task(EpisodesTaskConfig(dataset="digits", rotations=False, image_size=8))


def prototypes(support_x, support_y, query_x):
    """Nearest class mean in pixel space: (E, N·Q, N) logits."""
    onehot = F.one_hot(support_y).float()  # (E, N·K, N)
    protos = onehot.transpose(1, 2) @ support_x.flatten(2) / onehot.sum(1)[..., None]
    return -torch.cdist(query_x.flatten(2), protos).pow(2)


def always_class_0(support_x, support_y, query_x):
    n = int(support_y.max()) + 1
    return F.one_hot(torch.zeros(query_x.shape[:2], dtype=torch.long), n).float()


def test_constant_prediction_scores_exactly_one_in_n(digits):
    r = few_shot_accuracy(always_class_0, digits, n_way=5, k_shot=1, n_query=3, episodes=20)
    assert r["mean"] == pytest.approx(0.2, abs=1e-12) and r["half"] == pytest.approx(0.0, abs=1e-12)
    assert {k: r[k] for k in ("episodes", "n_way", "k_shot", "n_query")} == {"episodes": 20, "n_way": 5, "k_shot": 1,
                                                                           "n_query": 3}


def test_a_real_classifier_beats_chance_and_more_shots_help(digits):
    one = few_shot_accuracy(prototypes, digits, n_way=5, k_shot=1, episodes=200)
    five = few_shot_accuracy(prototypes, digits, n_way=5, k_shot=5, episodes=200)
    assert one["lo"] > 0.5 and five["mean"] > one["mean"]
    assert 0 < one["half"] < 0.05 and one["lo"] < one["mean"] < one["hi"]


def test_same_episodes_whatever_the_batch_size_and_new_ones_per_seed(digits):
    seen = {}

    def recording(tag):
        def predict(sx, sy, qx):
            seen.setdefault(tag, []).append(sx)
            return prototypes(sx, sy, qx)
        return predict

    a = few_shot_accuracy(recording("a"), digits, n_way=5, k_shot=1, episodes=30, batch_size=7)
    b = few_shot_accuracy(recording("b"), digits, n_way=5, k_shot=1, episodes=30, batch_size=30)
    few_shot_accuracy(recording("c"), digits, n_way=5, k_shot=1, episodes=30, seed=1)
    assert a == b and torch.equal(torch.cat(seen["a"]), torch.cat(seen["b"]))
    assert not torch.equal(torch.cat(seen["a"]), torch.cat(seen["c"]))
    # never the draws of a run seeded 0 (they use the run seed itself)
    raw = digits.sample(range(30), seed=0, step=0, split="test", n_way=5, k_shot=1, n_query=15)
    assert not torch.equal(torch.cat(seen["a"]), raw.support_images)


def test_no_grad_outside_but_predict_may_take_gradients(digits):
    def adapting(sx, sy, qx):
        assert not torch.is_grad_enabled()
        with torch.enable_grad():  # as MAML's predict does: fit a linear head on the support set
            w = torch.zeros(sx.shape[0], sx[0, 0].numel(), 5, requires_grad=True)  # one head per episode
            loss = F.cross_entropy((sx.flatten(2) @ w).flatten(0, 1), sy.flatten())
            (g,) = torch.autograd.grad(loss, w)
        return qx.flatten(2) @ (w - 10.0 * g)

    r = few_shot_accuracy(adapting, digits, n_way=5, k_shot=5, episodes=40)
    assert r["mean"] > 0.5


def test_bad_output_and_arguments(digits, capsys):
    with pytest.raises(ValueError, match=r"\(E, N·Q, N\) = \(4, 15, 5\), got \(4, 15, 4\)"):
        few_shot_accuracy(lambda sx, sy, qx: torch.zeros(4, 15, 4), digits, n_way=5, k_shot=1, n_query=3, episodes=4)
    with pytest.raises(ValueError, match="n_way=6 .*'test' split"):
        few_shot_accuracy(prototypes, digits, n_way=6, k_shot=1, episodes=4)
    with pytest.raises(ValueError, match="episodes"):
        few_shot_accuracy(prototypes, digits, n_way=5, k_shot=1, episodes=0)
    few_shot_accuracy(prototypes, digits, n_way=5, k_shot=1, episodes=4, progress=True)
    assert "5-way 1-shot" in capsys.readouterr().err


def test_table():
    r1 = {"mean": 0.98123, "half": 0.00234, "lo": 0, "hi": 0, "episodes": 1000, "n_way": 5, "k_shot": 1, "n_query": 15}
    r2 = {**r1, "mean": 0.5, "half": 0.1, "n_way": 20, "k_shot": 5}
    table = few_shot_table([r1, r2])
    assert table.splitlines()[0] == "| setting | accuracy (%) | episodes |"
    assert "| 5-way 1-shot | 98.12 ± 0.23 | 1000 |" in table and "| 20-way 5-shot | 50.00 ± 10.00 | 1000 |" in table
    named = few_shot_table({"protonet": [r1, r2], "maml": r1})
    assert "| maml | 5-way 1-shot | 98.12 ± 0.23 | 1000 |" in named and len(named.splitlines()) == 5



def test_confused_pairs_are_counted_unordered_by_dataset_class():
    from metalearn_ext.evaluate.few_shot import _tally_confusions

    counts = {}
    classes = torch.tensor([[7, 3, 5]])  # episode labels 0, 1, 2 are dataset classes 7, 3, 5
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 0, 2, 0]])  # 7 taken for 3, 3 for 7, 5 for 7
    _tally_confusions(counts, classes, labels, pred)
    assert counts == {(3, 7): 2, (5, 7): 1}
    _tally_confusions(counts, classes, labels, labels)  # no errors: nothing added
    assert counts == {(3, 7): 2, (5, 7): 1}


def test_a_result_names_the_most_confused_pairs(digits):
    names = digits.dataset("test").class_names

    def label_0_taken_for_1(sx, sy, qx):  # right everywhere except that label 0's queries get label 1
        e, nq = qx.shape[:2]
        truth = torch.arange(5).repeat_interleave(nq // 5).expand(e, -1)  # episodes are class-major
        return F.one_hot(torch.where(truth == 0, 1, truth), 5).float()

    r = few_shot_accuracy(label_0_taken_for_1, digits, n_way=5, k_shot=1, n_query=3, episodes=40)
    assert r["mean"] == pytest.approx(0.8) and r["errors"] == 40 * 3
    assert sum(n for _, _, n in r["confused"]) == r["errors"]  # 5 test digits: at most 10 pairs, all kept
    assert all(x in names and y in names and x != y for x, y, _ in r["confused"])
    counts = [n for _, _, n in r["confused"]]
    assert counts == sorted(counts, reverse=True)
    perfect = few_shot_accuracy(lambda sx, sy, qx: F.one_hot(torch.arange(5).repeat_interleave(3).expand(
        qx.shape[0], -1), 5).float(), digits, n_way=5, k_shot=1, n_query=3, episodes=10)
    assert perfect["mean"] == 1.0 and perfect["errors"] == 0 and perfect["confused"] == []


def test_the_eval_report_lists_the_most_confused_pairs_by_share_of_errors():
    from metalearn_ext.methods._few_shot import format_few_shot

    r = {"mean": 0.99, "half": 0.001, "episodes": 1000, "n_way": 5, "k_shot": 5, "n_query": 15, "errors": 200,
         "confused": [["Greek/character07", "Latin/character14", 50], ["b", "c", 20], ["d", "e", 10], ["f", "g", 1]]}
    text = format_few_shot({"method": "protonet", "step": 5, "data": "omniglot",
                            "results": [r, dict(r, n_way=20, errors=0, confused=[])]})
    assert "5-way 5-shot: Greek/character07 vs Latin/character14 25%, b vs c 10%, d vs e 5%\n" in text + "\n"
    assert "f vs g" not in text and "20-way 5-shot:" not in text.split("mistaken")[1]
    old = format_few_shot({"method": "protonet", "step": 5, "data": "omniglot",  # a few_shot.json from before
                           "results": [{k: v for k, v in r.items() if k not in ("errors", "confused")}]})
    assert "mistaken" not in old
