"""MANN (Santoro et al., ICML 2016): an LSTM controller with an external memory written by Least
Recently Used Access and read by content (specs/memory_np.md §1), on label-offset episodes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_ext.ops.choice import choose_backend
from metalearn_ext.ops.mann_episode import mann_episode, mann_episode_loop

__all__ = ["MANN", "previous_labels"]


def previous_labels(labels: Tensor) -> Tensor:
    """(B, L) int64 labels y_s -> (B, L) y_{s−1}, with −1 ("none yet") at s = 0."""
    return torch.cat([labels.new_full((labels.shape[0], 1), -1), labels[:, :-1]], dim=1)


class MANN(nn.Module):
    """An LSTM controller reading an LRUA memory; the prediction at step s is made before y_s is seen.

    Per step s: controller input [x_s ; onehot(y_{s−1}) ; r_{s−1}] -> LSTM -> h_s; keys, add vectors
    (tanh) and write gates (sigmoid) from h_s; one :func:`metalearn_ext.ops.mann_memory_step`
    (least-used slot zeroed, write, content read, usage update); logits_s = W_o [h_s ; r_s]. On a CPU with the
    extension built, the whole recurrence is one :func:`metalearn_ext.ops.mann_episode` call (and one backward
    call) instead of L steps of small ops.

    Args:
        input_dim: D, the flattened image (400 for 20×20).
        num_classes: C, classes per episode.
        hidden: LSTM units (the paper: 200).
        memory_slots: S (128); memory_width: W (40); read_heads: H (4).
        gamma: usage decay γ (0.95).
        memory_init: the value of every memory entry at s = 0 (the paper's 1e-6; the ops' cosine has
            an epsilon, so 0 gives no NaN either).
        backend: the ops' backend (None: the fastest built one; "reference": plain PyTorch).
        fused: run the whole episode as one ``mann_episode`` call where its cpp kernel can (CPU tensors,
            backend None or "cpp"); False: the step-by-step loop of ``mann_memory_step`` calls (for comparison).

    Each episode starts with usage and read weights 0, reads r_0 = 0 and a zero LSTM state. In one's
    own loop::

        logits, losses = mann.learn(images, labels)   # (B, L, D), (B, L) -> (B, L, C), (B, L)
        losses.mean().backward()
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 200, memory_slots: int = 128,
                 memory_width: int = 40, read_heads: int = 4, gamma: float = 0.95, memory_init: float = 1e-6,
                 backend: str | None = None, fused: bool = True) -> None:
        super().__init__()
        for name, v in (("input_dim", input_dim), ("num_classes", num_classes), ("hidden", hidden),
                        ("memory_slots", memory_slots), ("memory_width", memory_width), ("read_heads", read_heads)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MANN: {name} must be a positive int, got {v!r}")
        if read_heads > memory_slots:
            raise ValueError(f"MANN: read_heads ({read_heads}) must be <= memory_slots ({memory_slots})")
        self.input_dim, self.num_classes, self.hidden = input_dim, num_classes, hidden
        self.slots, self.width, self.heads = memory_slots, memory_width, read_heads
        self.gamma, self.memory_init, self.backend = float(gamma), float(memory_init), backend
        self.fused = bool(fused)
        hw = read_heads * memory_width
        # The [x ; y] part of the controller input does not depend on the recurrence: its gate
        # projection is one matmul over the whole episode; only [r ; h] is projected per step.
        # Gates are laid out [i, f, o, g] so that one sigmoid and one tanh cover them.
        self.input_gates = nn.Linear(input_dim + num_classes, 4 * hidden)
        self.recurrent_gates = nn.Linear(hw + hidden, 4 * hidden, bias=False)
        # keys (H·W), add vectors (H·W) and write gates (H) of every head in one projection
        self.head_proj = nn.Linear(hidden, 2 * hw + read_heads)
        self.output = nn.Linear(hidden + hw, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's LSTM initialization U(−1/√hidden, 1/√hidden) for the controller; forget-gate
        bias 1 (so the cell keeps its state early in training)."""
        bound = self.hidden ** -0.5
        for w in (self.input_gates.weight, self.input_gates.bias, self.recurrent_gates.weight):
            nn.init.uniform_(w, -bound, bound)
        with torch.no_grad():
            self.input_gates.bias[self.hidden:2 * self.hidden] += 1.0

    def _check(self, inputs: Tensor, labels: Tensor, name: str) -> None:
        if not isinstance(inputs, Tensor) or inputs.dim() != 3 or inputs.shape[2] != self.input_dim:
            got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"MANN: inputs must be of shape (B, L, D) = (B, L, {self.input_dim}), got {got}")
        if not isinstance(labels, Tensor) or tuple(labels.shape) != tuple(inputs.shape[:2]):
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"MANN: {name} must be of shape (B, L) = {tuple(inputs.shape[:2])}, got {got}")
        if labels.dtype != torch.int64:
            raise TypeError(f"MANN: {name} must be int64 class indices, got {labels.dtype}")

    def forward(self, inputs: Tensor, prev_labels: Tensor) -> Tensor:
        """One fresh episode per batch element (memory, usage and LSTM state start anew).

        Args:
            inputs: (B, L, D) x_s.
            prev_labels: (B, L) int64 y_{s−1} in 0..C−1, or −1 where there is none (s = 0);
                :func:`previous_labels` makes them from the targets.

        Returns:
            logits (B, L, C): step s's prediction of y_s.
        """
        self._check(inputs, prev_labels, "prev_labels")
        # the value check reads the labels on the host: skipped where that would break a graph
        capturing = inputs.is_cuda and torch.cuda.is_current_stream_capturing()
        if not (capturing or torch.compiler.is_compiling()):
            lo, hi = int(prev_labels.min()), int(prev_labels.max())
            if lo < -1 or hi >= self.num_classes:
                raise ValueError(f"MANN: prev_labels must be in -1..{self.num_classes - 1}, got values in {lo}..{hi}")
        classes = torch.arange(self.num_classes, device=inputs.device)
        onehot = (prev_labels.unsqueeze(-1) == classes).to(inputs.dtype)  # −1: all zeros; no host sync
        x_gates = self.input_gates(torch.cat([inputs, onehot], dim=-1))  # (B, L, 4n)
        args = (x_gates, self.recurrent_gates.weight, self.head_proj.weight, self.head_proj.bias, self.heads,
                self.slots, self.gamma, self.memory_init)
        if self.fused and self.backend in (None, "cpp") and choose_backend("mann_episode", self.backend, *args) == "cpp":
            hs, rs = mann_episode(*args, backend="cpp")
        else:
            hs, rs = mann_episode_loop(*args, step_backend=self.backend)
        return self.output(torch.cat([hs, rs], dim=-1))

    def learn(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Run fresh episodes, each label shown one step after its input (as :class:`MetaRNN`).

        Args:
            inputs: (B, L, D); labels: (B, L) int64 targets y_s.

        Returns:
            logits (B, L, C) and the per-step cross-entropy losses (B, L).
        """
        self._check(inputs, labels, "labels")
        logits = self(inputs, previous_labels(labels))
        return logits, F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
