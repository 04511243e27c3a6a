"""MANN's recurrence over a whole episode in plain PyTorch (specs/memory_np.md §1): the truth for the fused kernel,
and the per-step loop that MANN runs where there is no fused kernel (its memory step on any backend)."""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops.mann_memory_step import mann_memory_step


def mann_episode_loop(x_gates: Tensor, w_rec: Tensor, w_head: Tensor, b_head: Tensor, heads: int, slots: int,
                      gamma: float, memory_init: float, step_backend: str | None) -> tuple[Tensor, Tensor]:
    """The recurrence step by step, each step's memory update by ``mann_memory_step(backend=step_backend)``;
    arguments and results as :func:`mann_episode_reference`."""
    B, L, n4 = x_gates.shape
    n = n4 // 4
    hw = w_rec.shape[1] - n
    width = hw // heads
    memory = x_gates.new_full((B, slots, width), memory_init)
    usage = x_gates.new_zeros(B, slots)
    read_weights = x_gates.new_zeros(B, heads, slots)
    h = c = x_gates.new_zeros(B, n)
    r = x_gates.new_zeros(B, hw)
    w_rec_t = w_rec.t()
    hs, rs = [], []
    for s in range(L):
        gates = torch.addmm(x_gates[:, s], torch.cat([r, h], dim=1), w_rec_t)
        i, f, o = gates[:, :3 * n].sigmoid().chunk(3, dim=1)
        c = torch.addcmul(f * c, i, gates[:, 3 * n:].tanh())
        h = o * c.tanh()
        keys, add, alpha = torch.addmm(b_head, h, w_head.t()).split([hw, hw, heads], dim=1)
        memory, read_weights, reads, usage, _ = mann_memory_step(
            memory, usage, read_weights, keys.tanh().view(B, heads, width), add.tanh().view(B, heads, width),
            alpha.sigmoid(), gamma, backend=step_backend)
        r = reads.reshape(B, hw)
        hs.append(h)
        rs.append(r)
    return torch.stack(hs, 1), torch.stack(rs, 1)


def mann_episode_reference(x_gates: Tensor, w_rec: Tensor, w_head: Tensor, b_head: Tensor, heads: int, slots: int,
                           gamma: float, memory_init: float) -> tuple[Tensor, Tensor]:
    """x_gates (B, L, 4n): the input part of the LSTM gates [i, f, o, g] at every step (bias included);
    w_rec (4n, H·W + n): the gates' weights on [r_{s−1} ; h_{s−1}]; w_head (2·H·W + H, n), b_head (2·H·W + H):
    keys (tanh), add vectors (tanh) and write gates (sigmoid) of the H heads from h_s. The memory starts as
    `slots` × W entries equal to memory_init, usage, read weights, r_0, h_0 and c_0 at zero.

    Per step: gates = x_gates[:, s] + [r_{s−1} ; h_{s−1}]·w_recᵀ; c_s = σ(f)·c_{s−1} + σ(i)·tanh(g);
    h_s = σ(o)·tanh(c_s); one LRUA memory step (mann_memory_step) with the heads of h_s gives r_s.

    Returns (h (B, L, n), reads (B, L, H·W))."""
    return mann_episode_loop(x_gates, w_rec, w_head, b_head, heads, slots, gamma, memory_init, "reference")
