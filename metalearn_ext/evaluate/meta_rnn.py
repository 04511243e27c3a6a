"""Meta-training the meta-RNN baseline by BPTT on the same episodes VSML meta-trains on."""
from __future__ import annotations

import sys
import time

import torch
from torch import Tensor

from metalearn_ext.nn import MetaRNN
from metalearn_ext.tasks.seeds import RNN_INIT, STREAM, derive_seed

__all__ = ["train_meta_rnn"]


def train_meta_rnn(
    tasks,
    mean: Tensor,
    std: Tensor,
    *,
    hidden: int,
    steps: int,
    meta_batch: int,
    length: int,
    lr: float,
    clip: float,
    seed: int,
    progress: bool = False,
) -> tuple[MetaRNN, dict]:
    """Meta-train a :class:`MetaRNN` with Adam on full-episode BPTT.

    Meta-step k uses episode i = 0..meta_batch−1 drawn from seed (``seed``, k, i) — exactly the
    episodes of VSML's BPTT meta-step k — with inputs standardized by ``mean`` / ``std`` (D,).

    Returns the model (in eval mode) and a summary: steps, meta_batch, episode_length, the mean
    online loss over the first and the last 10% of the steps, seconds.
    """
    torch.manual_seed(derive_seed(seed, RNN_INIT))
    model = MetaRNN(tasks.input_dim, tasks.num_classes, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="meta-RNN bptt", unit="step", dynamic_ncols=True, file=sys.stderr)
    start = time.perf_counter()
    for k in range(steps):
        x, y = tasks.streams([derive_seed(seed, k, i, STREAM) for i in range(meta_batch)], length)
        _, loss = model.learn((x - mean) / std, y)
        loss = loss.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    if bar is not None:
        bar.close()
    tenth = max(1, steps // 10)
    model.eval()
    return model, {"steps": steps, "meta_batch": meta_batch, "episode_length": length, "hidden": hidden, "lr": lr,
                   "loss_first_tenth": sum(losses[:tenth]) / tenth, "loss_last_tenth": sum(losses[-tenth:]) / tenth,
                   "seconds": time.perf_counter() - start}
