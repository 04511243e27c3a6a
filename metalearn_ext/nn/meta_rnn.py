"""A meta-RNN baseline: an LSTM that reads (x_s, onehot(y_{s−1})) and predicts y_s (Hochreiter et al.
2001; Santoro et al. 2016; the meta-RNN the VSML paper compares against)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MetaRNN"]


class MetaRNN(nn.Module):
    """An LSTM learner for online classification streams; learning lives in its hidden state.

    At step s it reads the input x_s and the onehot label of the previous example (zeros at s = 0)
    and outputs logits for x_s, before y_s is seen — the same protocol as :class:`VSML`.

    Args:
        input_dim: D (inputs are expected standardized).
        num_classes: C.
        hidden: the LSTM's hidden size.
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.input_dim, self.num_classes = input_dim, num_classes
        self.lstm = nn.LSTM(input_dim + num_classes, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def learn(self, stream_x: Tensor, stream_y: Tensor) -> tuple[Tensor, Tensor]:
        """Run fresh episodes: stream_x (T, L, D), stream_y (T, L) -> logits (T, L, C), online losses (T, L)."""
        if stream_x.dim() != 3 or stream_x.shape[2] != self.input_dim:
            raise ValueError(f"MetaRNN.learn: stream_x must be of shape (T, L, {self.input_dim}), "
                             f"got {tuple(stream_x.shape)}")
        if stream_y.shape != stream_x.shape[:2]:
            raise ValueError(f"MetaRNN.learn: stream_y must be of shape {tuple(stream_x.shape[:2])}, "
                             f"got {tuple(stream_y.shape)}")
        onehot = F.one_hot(stream_y, self.num_classes).to(stream_x.dtype)
        prev = torch.cat([torch.zeros_like(onehot[:, :1]), onehot[:, :-1]], dim=1)
        out, _ = self.lstm(torch.cat([stream_x, prev], dim=-1))
        logits = self.head(out)
        losses = F.cross_entropy(logits.transpose(1, 2), stream_y, reduction="none")
        return logits, losses
