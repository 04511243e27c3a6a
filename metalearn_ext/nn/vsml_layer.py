"""One dense VSML layer: a grid of synapse-LSTMs with shared parameters (specs/vsml.md §1)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from metalearn_ext.ops.vsml_step import vsml_step

__all__ = ["VSMLLayer", "linear_per_copy"]


def linear_per_copy(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight.T + bias`` with shared (out, in) / (out,) or per-copy (T, out, in) / (T, out)
    parameters. x: (T, K, in) -> (T, K, out)."""
    if weight.dim() == 2:
        return torch.nn.functional.linear(x, weight, bias)
    return torch.einsum("tki,toi->tko", x, weight) + bias[:, None, :]


class VSMLLayer(nn.Module):
    """A dense layer of ``in_features × out_features`` synapses, each an LSTM with state size N.

    All synapses share one LSTM (``weight`` (4N, 2M+N), ``bias`` (4N,), gates i, f, g, o) and two
    messenger maps N → M: ``fwd_msg`` turns what output neuron b receives into its outgoing
    forward message, ``bwd_msg`` turns what input neuron a receives into its outgoing backward
    message. The op returns means over the fan-in; with ``scale_by_fan_in`` they are multiplied by
    the fan-in (a sum), which the field notes found necessary for gradients to flow
    (specs/vsml.md, field note 2).

    Args:
        in_features, out_features: A and B.
        state_size: N, the LSTM state size per synapse.
        msg_size: M, the message size.
        ticks: LSTM ticks per step (messages fixed across them).
        scale_by_fan_in: multiply fwd_mean by A and bwd_mean by B before the messenger maps.
        forget_bias, input_bias: added to the forget / input gate biases at init (+5 / −5).
        backend: passed to :func:`vsml_step` (None: the fastest built one).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        state_size: int = 16,
        msg_size: int = 8,
        ticks: int = 2,
        scale_by_fan_in: bool = True,
        forget_bias: float = 5.0,
        input_bias: float = -5.0,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if min(in_features, out_features, state_size, msg_size, ticks) < 1:
            raise ValueError(
                f"VSMLLayer: in_features, out_features, state_size, msg_size and ticks must be >= 1, got "
                f"{in_features}, {out_features}, {state_size}, {msg_size}, {ticks}"
            )
        N, M = state_size, msg_size
        self.in_features, self.out_features = in_features, out_features
        self.state_size, self.msg_size, self.ticks = N, M, ticks
        self.scale_by_fan_in = scale_by_fan_in
        self.backend = backend
        bound = 1.0 / math.sqrt(2 * M + N)
        self.weight = nn.Parameter(torch.empty(4 * N, 2 * M + N).uniform_(-bound, bound))
        bias = torch.zeros(4 * N)
        bias[:N] += input_bias
        bias[N : 2 * N] += forget_bias
        self.bias = nn.Parameter(bias)
        self.fwd_msg = nn.Linear(N, M)
        self.bwd_msg = nn.Linear(N, M)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, N={self.state_size}, "
                f"M={self.msg_size}, ticks={self.ticks}, scale_by_fan_in={self.scale_by_fan_in}")

    def initial_state(
        self, copies: int, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Fresh (h, c), each (T, A, B, N): h = 0; the first half of c's channels truncated-normal
        with std 1/sqrt(A) (cut at ±2 std), the rest 0 — this breaks the symmetry between synapses."""
        dtype = dtype or self.weight.dtype
        device = device or self.weight.device
        A, B, N = self.in_features, self.out_features, self.state_size
        h = torch.zeros(copies, A, B, N, dtype=dtype, device=device)
        c = torch.zeros(copies, A, B, N, dtype=dtype, device=device)
        half = N // 2 if N > 1 else 1
        std = 1.0 / math.sqrt(A)
        noise = torch.empty(copies, A, B, half, dtype=torch.float32)  # CPU, so generators are portable
        nn.init.trunc_normal_(noise, std=std, a=-2 * std, b=2 * std, generator=generator)
        c[..., :half] = noise.to(device=device, dtype=dtype)
        return h, c

    def forward(
        self, h: Tensor, c: Tensor, fwd_in: Tensor, bwd_in: Tensor, params: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step of the layer.

        Args:
            h, c: (T, A, B, N) synapse states.
            fwd_in: (T, A, M) forward message into each input neuron.
            bwd_in: (T, B, M) backward message into each output neuron.
            params: optional replacement parameters with keys ``weight``, ``bias``,
                ``fwd_msg.weight``, ``fwd_msg.bias``, ``bwd_msg.weight``, ``bwd_msg.bias``, each
                either of the module's shape (shared) or with a leading T (per copy, for ES).

        Returns:
            (h', c', fwd_out (T, B, M), bwd_out (T, A, M)).
        """
        p = params if params is not None else dict(self.named_parameters())
        h, c, fwd_mean, bwd_mean = vsml_step(h, c, fwd_in, bwd_in, p["weight"], p["bias"], self.ticks, self.backend)
        if self.scale_by_fan_in:
            fwd_mean = fwd_mean * self.in_features
            bwd_mean = bwd_mean * self.out_features
        fwd_out = linear_per_copy(fwd_mean, p["fwd_msg.weight"], p["fwd_msg.bias"])
        bwd_out = linear_per_copy(bwd_mean, p["bwd_msg.weight"], p["bwd_msg.bias"])
        return h, c, fwd_out, bwd_out
