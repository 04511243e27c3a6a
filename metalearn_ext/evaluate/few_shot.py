"""Few-shot accuracy ± 95% on held-out episodes, for every model that answers the few-shot
interface ``predict(support_x, support_y, query_x) -> logits``.

Episodes are drawn as :mod:`metalearn_ext.evaluate.held_out` says: never a training draw, the same
whatever ``batch_size`` is.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from metalearn_ext.evaluate.held_out import check_counts, held_out_batches
from metalearn_ext.evaluate.stats import interval

__all__ = ["CONFUSED_PAIRS", "FewShotPredict", "few_shot_accuracy", "few_shot_table"]

# support_x (E, N·K, C, H, W), support_y (E, N·K) int64, query_x (E, N·Q, C, H, W) -> logits (E, N·Q, N)
FewShotPredict = Callable[[Tensor, Tensor, Tensor], Tensor]


def few_shot_accuracy(
    predict: FewShotPredict,
    task: Any,
    *,
    n_way: int,
    k_shot: int,
    n_query: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    batch_size: int = 50,
    split: str = "test",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict:
    """Query accuracy of ``predict`` on ``episodes`` N-way K-shot episodes of ``task`` (an
    episodes task: ``task.sample(indices, seed=, step=, split=, n_way=, k_shot=, n_query=)``).

    ``predict`` runs under ``torch.no_grad()`` (not inference mode: a model that adapts by
    gradients, like MAML, enables them inside its own predict), ``batch_size`` episodes a call,
    on ``device`` (default: where the task puts them, the CPU).

    Returns:
        ``{"mean", "half", "lo", "hi", "episodes", "n_way", "k_shot", "n_query", "errors",
        "confused"}``: the mean over episodes of each episode's query accuracy, a fraction in
        [0, 1], with its 95% interval; the number of wrong queries; and the class pairs most often
        mistaken for each other (either way), most first, at most :data:`CONFUSED_PAIRS`:
        ``[[class_a, class_b, count], ...]`` with the split's class names (class indices where it
        has none).

    Raises:
        ValueError: bad counts, or logits not shaped (E, N·Q, N).
    """
    check_counts("few_shot_accuracy", n_way=n_way, k_shot=k_shot, n_query=n_query, episodes=episodes,
                 batch_size=batch_size)
    per_episode = []
    pair_counts: dict[tuple[int, int], int] = {}
    with torch.no_grad():
        for _, batch in held_out_batches(task, episodes, seed=seed, batch_size=batch_size, split=split, device=device,
                                         progress=progress, desc=f"{n_way}-way {k_shot}-shot", unit="episode",
                                         n_way=n_way, k_shot=k_shot, n_query=n_query):
            logits = predict(batch.support_images, batch.support_labels, batch.query_images)
            e, nq = batch.query_labels.shape
            if not isinstance(logits, Tensor) or tuple(logits.shape) != (e, nq, n_way):
                got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"predict must return logits (E, N·Q, N) = ({e}, {nq}, {n_way}), got {got}")
            pred = logits.argmax(-1)
            per_episode.append((pred == batch.query_labels).double().mean(1).cpu())
            _tally_confusions(pair_counts, batch.classes, batch.query_labels, pred)
    stats = interval(torch.cat(per_episode))
    return {"mean": stats["mean"], "half": stats["half"], "lo": stats["lo"], "hi": stats["hi"],
            "episodes": episodes, "n_way": n_way, "k_shot": k_shot, "n_query": n_query,
            "errors": sum(pair_counts.values()), "confused": _top_pairs(pair_counts, task, split)}


CONFUSED_PAIRS = 10  # class pairs kept in a result's "confused" list


def _tally_confusions(counts: dict[tuple[int, int], int], classes: Tensor, labels: Tensor, pred: Tensor) -> None:
    """Add each wrong query's (true class, predicted class) pair, unordered, as dataset class ids:
    classes (E, N), labels and pred (E, N·Q) episode labels."""
    wrong = (pred != labels).cpu()
    if not bool(wrong.any()):
        return
    classes = classes.cpu()
    rows = torch.nonzero(wrong)[:, 0]
    true = classes[rows, labels.cpu()[wrong]]
    said = classes[rows, pred.cpu()[wrong]]
    for a, b in zip(torch.minimum(true, said).tolist(), torch.maximum(true, said).tolist()):
        counts[(a, b)] = counts.get((a, b), 0) + 1


def _top_pairs(counts: dict[tuple[int, int], int], task: Any, split: str) -> list[list]:
    dataset = getattr(task, "dataset", None)
    names = getattr(dataset(split), "class_names", None) if callable(dataset) else None
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:CONFUSED_PAIRS]
    name = (lambda c: names[c]) if names else (lambda c: c)
    return [[name(a), name(b), n] for (a, b), n in top]


def few_shot_table(results: Sequence[dict] | Mapping[str, Sequence[dict] | dict]) -> str:
    """A Markdown table of :func:`few_shot_accuracy` results, accuracy in percent ± the 95% half-width.

    ``results``: a list of results (one row each), or model name -> a result or list of results
    (then a first column names the model).
    """
    rows: list[tuple[str | None, dict]] = []
    if isinstance(results, Mapping):
        for model, rs in results.items():
            rows += [(str(model), r) for r in ([rs] if isinstance(rs, Mapping) else rs)]
    else:
        rows = [(None, r) for r in results]
    named = any(m is not None for m, _ in rows)
    head = (["model"] if named else []) + ["setting", "accuracy (%)", "episodes"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model, r in rows:
        cells = ([model] if named else []) + [
            f"{r['n_way']}-way {r['k_shot']}-shot",
            f"{100 * r['mean']:.2f} ± {100 * r['half']:.2f}",
            str(r["episodes"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
