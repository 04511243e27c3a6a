"""The VSML step in plain PyTorch: the truth every kernel is tested against (specs/vsml.md §1).

`project_messages` and `message_gradients` are the parts around the per-synapse core that every
Python-side backend shares (the C++ backends do the same in csrc/vsml_step.cpp).
"""
from __future__ import annotations

import torch
from torch import Tensor


def project_messages(fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The message part of the gates depends on a only or b only, so it is computed once per row and column.

    Returns row (T, A, 4N) = fwd_in·W_fwdᵀ + bias, col (T, B, 4N) = bwd_in·W_bwdᵀ (both contiguous) and
    W_h as (Tw, 4N, N) with Tw = 1 for shared and T for per-copy weights.
    """
    M = fwd_in.shape[-1]
    w = weight if weight.dim() == 3 else weight.unsqueeze(0)
    row = torch.matmul(fwd_in, w[..., :M].transpose(1, 2)) + bias.unsqueeze(-2)
    col = torch.matmul(bwd_in, w[..., M : 2 * M].transpose(1, 2))
    return row.contiguous(), col.contiguous(), w[..., 2 * M :]


def message_gradients(
    g_row: Tensor, g_col: Tensor, g_wh: Tensor, fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Chains the core's sums of gate gradients dz through the projections.

    g_row (T, A, 4N) = Σ_b Σ_k dz; g_col (T, B, 4N) = Σ_a Σ_k dz; g_wh (T, 4N, N) = Σ_{a,b,k} dz_k ⊗ h_{k−1}.
    Returns the gradients w.r.t. fwd_in, bwd_in, weight and bias, shaped like them.
    """
    M = fwd_in.shape[-1]
    grad_fwd_in = torch.matmul(g_row, weight[..., :M])
    grad_bwd_in = torch.matmul(g_col, weight[..., M : 2 * M])
    grad_weight = torch.cat(
        [torch.matmul(g_row.transpose(1, 2), fwd_in), torch.matmul(g_col.transpose(1, 2), bwd_in), g_wh], dim=-1
    )
    grad_bias = g_row.sum(1)
    if weight.dim() == 2:
        grad_weight = grad_weight.sum(0)
    if bias.dim() == 1:
        grad_bias = grad_bias.sum(0)
    return grad_fwd_in, grad_bwd_in, grad_weight, grad_bias


def vsml_step_reference(
    h: Tensor, c: Tensor, fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor, ticks: int = 1
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step (``ticks`` LSTM ticks) of a dense VSML layer, differentiable by autograd.

    Shapes: h, c (T, A, B, N); fwd_in (T, A, M); bwd_in (T, B, M);
    weight (4N, 2M+N) or (T, 4N, 2M+N); bias (4N,) or (T, 4N). Gate order i, f, g, o.
    Returns h', c' (T, A, B, N), fwd_mean (T, B, N) = mean_a h', bwd_mean (T, A, N) = mean_b h'.
    """
    return vsml_core_reference(h, c, *project_messages(fwd_in, bwd_in, weight, bias), ticks)


def vsml_core_reference(
    h: Tensor, c: Tensor, row: Tensor, col: Tensor, w_h: Tensor, ticks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-synapse core every fused kernel implements, after `project_messages`:
    row (T, A, 4N), col (T, B, 4N), w_h (1 or T, 4N, N). Same outputs as `vsml_step_reference`."""
    msg = row[:, :, None, :] + col[:, None, :, :]  # (T, A, B, 4N)
    w_h = w_h.expand(h.shape[0], *w_h.shape[1:])
    for _ in range(ticks):
        z = msg + torch.einsum("tabn,tjn->tabj", h, w_h)
        i, f, g, o = z.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h, c, h.mean(dim=1), h.mean(dim=2)
