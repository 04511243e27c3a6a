"""VSML: a network of synapse-LSTMs that learns online by running forward (specs/vsml.md §2)."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_ext.nn.vsml_layer import VSMLLayer

__all__ = ["FEEDBACK_MODES", "VSML", "VSMLState"]

FEEDBACK_MODES = ("previous", "extra_tick")


@dataclass
class VSMLState:
    """Everything a VSML network carries from one example to the next, for T copies.

    Attributes:
        h, c: per layer l, (T, n_l, n_{l+1}, N) synapse states.
        bwd: per layer l < L−1, (T, n_{l+1}, M): the backward message layer l+1 sent last step.
        prev_x: (T, D) the previous (standardized) input, zeros before the first.
        prev_logits: (T, C) the previous prediction.
        prev_onehot: (T, C) onehot of the previous label, zeros before the first example
            (so the first feedback is 0).
        seen: (T, 1) 1.0 once an example has been seen, else 0.0 (masks the first feedback).
    """

    h: list[Tensor]
    c: list[Tensor]
    bwd: list[Tensor]
    prev_x: Tensor
    prev_logits: Tensor
    prev_onehot: Tensor
    seen: Tensor

    @property
    def copies(self) -> int:
        return self.prev_x.shape[0]

    def _map(self, fn) -> VSMLState:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = [fn(t) for t in v] if isinstance(v, list) else fn(v)
        return VSMLState(**out)

    def detach(self) -> VSMLState:
        """The same state cut from the autograd graph (truncated BPTT)."""
        return self._map(Tensor.detach)

    def repeat_interleave(self, repeats: int) -> VSMLState:
        """Each copy repeated ``repeats`` times in place (copy t -> copies t·r … t·r + r − 1)."""
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    @staticmethod
    def cat(states: Sequence[VSMLState]) -> VSMLState:
        """Concatenate the copies of several states (same network)."""
        first = states[0]
        out = {}
        for f in fields(first):
            vals = [getattr(s, f.name) for s in states]
            if isinstance(vals[0], list):
                out[f.name] = [torch.cat([v[i] for v in vals]) for i in range(len(vals[0]))]
            else:
                out[f.name] = torch.cat(vals)
        return VSMLState(**out)


class VSML(nn.Module):
    """A VSML network: ``len(sizes) − 1`` dense :class:`VSMLLayer` s, D = sizes[0] → … → C = sizes[-1].

    Per example (``learn`` runs one after another, T copies at once):

    1. the standardized input x_s is channel 0 of the forward message into layer 0; with
       ``prev_input`` channel 1 carries x_{s−1} (field note 1: what made BPTT meta-training
       leave the plateau);
    2. layers run in order; layer l's backward input is what layer l+1 sent on the previous
       step, the top layer's is the feedback: channel 0 = softmax(logits) − onehot(label),
       channel 1 = onehot(label);
    3. the prediction is channel 0 of the last forward message; its cross-entropy against y_s
       is the online loss.

    ``feedback="previous"`` (default): the feedback about x_{s−1} arrives together with x_s.
    ``feedback="extra_tick"`` (the official code's variant): after the prediction, a second
    pass re-presents x_s with the feedback about x_s itself.

    The LSTM parameters are per layer; every synapse of a layer shares them.

    Args:
        sizes: (D, hidden…, C).
        state_size, msg_size, ticks, scale_by_fan_in, forget_bias, input_bias, backend: see
            :class:`VSMLLayer`.
        prev_input: add the previous input as channel 1 of the input message (needs M >= 2).
        feedback: "previous" or "extra_tick".
    """

    def __init__(
        self,
        sizes: Sequence[int],
        state_size: int = 16,
        msg_size: int = 8,
        ticks: int = 2,
        prev_input: bool = True,
        feedback: str = "previous",
        scale_by_fan_in: bool = True,
        forget_bias: float = 5.0,
        input_bias: float = -5.0,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"VSML: sizes must be (D, hidden..., C) with every size >= 1, got {sizes}")
        if feedback not in FEEDBACK_MODES:
            raise ValueError(f"VSML: feedback must be one of {FEEDBACK_MODES}, got {feedback!r}")
        if msg_size < 2:
            raise ValueError(f"VSML: msg_size must be >= 2 (error and label channels), got {msg_size}")
        self.sizes = sizes
        self.prev_input = prev_input
        self.feedback = feedback
        self.layers = nn.ModuleList(
            VSMLLayer(a, b, state_size, msg_size, ticks, scale_by_fan_in, forget_bias, input_bias, backend)
            for a, b in itertools.pairwise(sizes)
        )
        self.register_buffer("input_mean", torch.zeros(sizes[0]))
        self.register_buffer("input_std", torch.ones(sizes[0]))
        self.state: VSMLState | None = None

    @property
    def input_dim(self) -> int:
        return self.sizes[0]

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    @property
    def msg_size(self) -> int:
        return self.layers[0].msg_size

    def set_input_stats(self, mean: Tensor, std: Tensor) -> None:
        """Per-feature statistics (D,) of the meta-training inputs; inputs become (x − mean) / std."""
        if mean.shape != (self.input_dim,) or std.shape != (self.input_dim,):
            raise ValueError(f"VSML.set_input_stats: mean and std must be of shape ({self.input_dim},), got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not (std > 0).all():
            raise ValueError("VSML.set_input_stats: std must be positive")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    def synapses(self) -> int:
        """Synapses of one copy (Σ_l n_l · n_{l+1})."""
        return sum(a * b for a, b in itertools.pairwise(self.sizes))

    def synapse_ticks_per_example(self) -> int:
        """LSTM synapse updates one copy does per example."""
        passes = 2 if self.feedback == "extra_tick" else 1
        return passes * sum(layer.in_features * layer.out_features * layer.ticks for layer in self.layers)

    # ----------------------------------------------------------------------------------- state
    def initial_state(self, copies: int, generator: torch.Generator | None = None) -> VSMLState:
        """A fresh episode state for ``copies`` copies (spec §2), random c drawn from ``generator``."""
        ref = self.input_mean
        hs, cs = [], []
        for layer in self.layers:
            h, c = layer.initial_state(copies, generator, dtype=ref.dtype, device=ref.device)
            hs.append(h)
            cs.append(c)
        M, C = self.msg_size, self.num_classes
        zeros = lambda *s: torch.zeros(*s, dtype=ref.dtype, device=ref.device)
        bwd = [zeros(copies, layer.out_features, M) for layer in self.layers[:-1]]
        return VSMLState(hs, cs, bwd, zeros(copies, self.input_dim), zeros(copies, C), zeros(copies, C),
                         zeros(copies, 1))

    def reset_state(self) -> None:
        """Forget everything learned: the next ``learn`` starts a fresh episode."""
        self.state = None

    def detach_state(self) -> None:
        """Keep the state but cut it from the autograd graph (for truncated BPTT)."""
        if self.state is not None:
            self.state = self.state.detach()

    # ------------------------------------------------------------------------------ parameters
    def num_meta_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_vector(self) -> Tensor:
        """All meta-parameters as one flat vector (P,)."""
        return torch.nn.utils.parameters_to_vector(self.parameters())

    def per_copy_parameters(self, theta: Tensor) -> list[dict[str, Tensor]]:
        """Split flat per-copy parameters (T, P) into each layer's ``params`` dict of (T, ...) tensors."""
        P = self.num_meta_parameters()
        if theta.dim() != 2 or theta.shape[1] != P:
            raise ValueError(f"VSML.per_copy_parameters: theta must be of shape (T, {P}), got {tuple(theta.shape)}")
        out, offset = [], 0
        for layer in self.layers:
            d = {}
            for name, p in layer.named_parameters():
                d[name] = theta[:, offset : offset + p.numel()].reshape(theta.shape[0], *p.shape)
                offset += p.numel()
            out.append(d)
        return out

    # -------------------------------------------------------------------------------- learning
    def _input_message(self, x: Tensor, prev_x: Tensor) -> Tensor:
        msg = x.new_zeros(*x.shape, self.msg_size)
        msg[..., 0] = x
        if self.prev_input:
            msg[..., 1] = prev_x
        return msg

    def _feedback(self, logits: Tensor, onehot: Tensor, seen: Tensor) -> Tensor:
        msg = logits.new_zeros(*logits.shape, self.msg_size)
        msg[..., 0] = (torch.softmax(logits, dim=-1) - onehot) * seen
        msg[..., 1] = onehot
        return msg

    def _pass(self, s: VSMLState, fwd: Tensor, top_bwd: Tensor, params) -> Tensor:
        """Run every layer once, updating s in place; returns the last forward message (T, C, M)."""
        new_bwd = list(s.bwd)
        for l, layer in enumerate(self.layers):
            bwd_in = top_bwd if l == len(self.layers) - 1 else s.bwd[l]
            s.h[l], s.c[l], fwd, bwd_out = layer(s.h[l], s.c[l], fwd, bwd_in, None if params is None else params[l])
            if l > 0:
                new_bwd[l - 1] = bwd_out
        s.bwd = new_bwd
        return fwd

    def learn(
        self,
        stream_x: Tensor,
        stream_y: Tensor,
        params: Tensor | list[dict[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Learn online from T streams, predicting each example before its label is fed back.

        Args:
            stream_x: (T, L, D) raw inputs (standardized here with the stored statistics).
            stream_y: (T, L) int64 labels in 0..C−1.
            params: None (the module's shared parameters), flat per-copy parameters (T, P), or
                the per-layer dicts of :meth:`per_copy_parameters`.
            generator: draws the initial state if a fresh episode starts.

        Returns:
            logits (T, L, C): the prediction for each example before its label was seen;
            losses (T, L): their cross-entropy (the online loss).

        The state continues from the previous call (a fresh episode after ``reset_state()`` or
        when none exists) and is kept in ``self.state``.
        """
        if stream_x.dim() != 3 or stream_x.shape[2] != self.input_dim:
            raise ValueError(f"VSML.learn: stream_x must be of shape (T, L, {self.input_dim}), "
                             f"got {tuple(stream_x.shape)}")
        T, L, _ = stream_x.shape
        if stream_y.shape != (T, L):
            raise ValueError(f"VSML.learn: stream_y must be of shape (T, L) = ({T}, {L}), got {tuple(stream_y.shape)}")
        if isinstance(params, Tensor):
            params = self.per_copy_parameters(params)
        if self.state is None:
            self.state = self.initial_state(T, generator)
        elif self.state.copies != T:
            raise ValueError(f"VSML.learn: the carried state has {self.state.copies} copies but the stream has "
                             f"T = {T}; call reset_state() first")
        s = self.state
        x_all = (stream_x.to(self.input_mean.dtype) - self.input_mean) / self.input_std
        onehot_all = F.one_hot(stream_y, self.num_classes).to(x_all.dtype)
        logits_out, losses = [], []
        for i in range(L):
            x, onehot = x_all[:, i], onehot_all[:, i]
            fwd = self._input_message(x, s.prev_x)
            if self.feedback == "previous":
                top = self._feedback(s.prev_logits, s.prev_onehot, s.seen)
                logits = self._pass(s, fwd, top, params)[..., 0]
            else:
                silent = x.new_zeros(T, self.num_classes, self.msg_size)
                logits = self._pass(s, fwd, silent, params)[..., 0]
                self._pass(s, fwd, self._feedback(logits, onehot, torch.ones_like(s.seen)), params)
            s.prev_x, s.prev_logits, s.prev_onehot = x, logits, onehot
            s.seen = torch.ones_like(s.seen)
            logits_out.append(logits)
            losses.append(F.cross_entropy(logits, stream_y[:, i], reduction="none"))
        return torch.stack(logits_out, 1), torch.stack(losses, 1)
