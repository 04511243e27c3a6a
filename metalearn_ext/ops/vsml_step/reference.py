"""The VSML step in plain PyTorch: the truth every kernel is tested against (specs/vsml.md §1)."""
from __future__ import annotations

import torch
from torch import Tensor


def vsml_step_reference(
    h: Tensor, c: Tensor, fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor, ticks: int = 1
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step (``ticks`` LSTM ticks) of a dense VSML layer, differentiable by autograd.

    Shapes: h, c (T, A, B, N); fwd_in (T, A, M); bwd_in (T, B, M);
    weight (4N, 2M+N) or (T, 4N, 2M+N); bias (4N,) or (T, 4N). Gate order i, f, g, o.
    Returns h', c' (T, A, B, N), fwd_mean (T, B, N) = mean_a h', bwd_mean (T, A, N) = mean_b h'.
    """
    T, A, B, N = h.shape
    M = fwd_in.shape[-1]
    if weight.dim() == 2:
        weight = weight.expand(T, *weight.shape)
    if bias.dim() == 1:
        bias = bias.expand(T, *bias.shape)
    w_fwd, w_bwd, w_h = weight[..., :M], weight[..., M : 2 * M], weight[..., 2 * M :]
    # Messages are fixed over the ticks of a step: project them once per row / column.
    row = torch.einsum("tam,tjm->taj", fwd_in, w_fwd) + bias[:, None, :]  # (T, A, 4N)
    col = torch.einsum("tbm,tjm->tbj", bwd_in, w_bwd)  # (T, B, 4N)
    msg = row[:, :, None, :] + col[:, None, :, :]  # (T, A, B, 4N)
    for _ in range(ticks):
        z = msg + torch.einsum("tabn,tjn->tabj", h, w_h)
        i, f, g, o = z.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h, c, h.mean(dim=1), h.mean(dim=2)
