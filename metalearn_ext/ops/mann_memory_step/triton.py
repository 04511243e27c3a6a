"""Triton backend of ``mann_memory_step`` (specs/memory_np.md §1): one fused kernel per direction.

Shapes: memory (B, S, W), usage (B, S), read_weights (B, H, S), keys, add (B, H, W), alpha (B, H).
Returns memory' (B, S, W), read_weights' (B, H, S), reads (B, H, W), usage' (B, S), write_weights (B, H, S).

Design: one program per batch element b keeps its memory (S, W) as one register tile through the whole
step: the H least-used slots (H masked arg-min passes over usage; equal usage, lower index first, as
torch.sort(stable=True)), the write, the zeroing of the least-used row, the content read of every head
(the helpers of ops/content_read/triton.py) and the usage update. The backward recomputes the step
from the inputs, runs the content read's backward over the heads into the same tile, then the
write's. The chosen slots go through a small (B, H) int32 buffer between the kernel's loops. Usage
must not be NaN (it is a decayed sum of softmax weights). Not differentiable twice: a double backward
runs through the reference.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import autograd
from metalearn_ext.ops.content_read.reference import COS_EPS
from metalearn_ext.ops.mann_memory_step.reference import mann_memory_step_reference
from metalearn_ext.ops.mann_memory_step.shapes import fake_mann_memory_step
from metalearn_ext.ops.triton_support import tl, triton

if triton is not None:
    from metalearn_ext.ops.content_read.triton import (
        _head_backward,
        _head_forward,
        _inv_norms,
        block_sizes,
    )

__all__ = ["mann_memory_step_triton"]


if triton is not None:

    @triton.jit
    def _least_used(u, taken, s, smask, BLOCK_S: tl.constexpr):
        # The least-used slot not yet taken (lowest index among equals), and taken with it added.
        cand = smask & (taken == 0)
        low = tl.min(tl.where(cand, u, float("inf")), axis=0)
        slot = tl.min(tl.where(cand & (u == low), s, BLOCK_S), axis=0)
        return slot, tl.where(s == slot, 1, taken)

    @triton.jit
    def _write(mem_ptr, u_ptr, rw_ptr, add_ptr, alpha_ptr, ww_ptr, slots_ptr, b, H, S, W, s, j, smask, jmask,
               STORE_WW: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_W: tl.constexpr):
        # memory' (BLOCK_S, BLOCK_W) and Σ_h ww[h] (BLOCK_S,); stores the slots (and ww when STORE_WW).
        mask2 = smask[:, None] & jmask[None, :]
        m = tl.load(mem_ptr + b * S * W + s[:, None] * W + j[None, :], mask=mask2, other=0.0)
        u = tl.load(u_ptr + b * S + s, mask=smask, other=0.0)
        taken = tl.zeros((BLOCK_S,), dtype=tl.int32)
        written = tl.zeros((BLOCK_S, BLOCK_W), dtype=tl.float32)
        ww_sum = tl.zeros((BLOCK_S,), dtype=tl.float32)
        first, _ = _least_used(u, taken, s, smask, BLOCK_S)  # the slot that is zeroed
        for h in range(H):
            slot, taken = _least_used(u, taken, s, smask, BLOCK_S)
            tl.store(slots_ptr + b * H + h, slot)
            alpha = tl.load(alpha_ptr + b * H + h)
            rw = tl.load(rw_ptr + (b * H + h) * S + s, mask=smask, other=0.0)
            ww = alpha * rw + tl.where(s == slot, 1.0 - alpha, 0.0)
            if STORE_WW:
                tl.store(ww_ptr + (b * H + h) * S + s, ww, mask=smask)
            ww_sum += ww
            add = tl.load(add_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            written += ww[:, None] * add[None, :]
        keep = tl.where(s == first, 0.0, 1.0)
        return m * keep[:, None] + written, ww_sum, first

    @triton.jit
    def _fwd_kernel(mem_ptr, u_ptr, rw_ptr, keys_ptr, add_ptr, alpha_ptr, slots_ptr,
                    mo_ptr, rwo_ptr, reads_ptr, uo_ptr, ww_ptr, H, S, W, gamma, eps,
                    BLOCK_S: tl.constexpr, BLOCK_W: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        s = tl.arange(0, BLOCK_S)
        j = tl.arange(0, BLOCK_W)
        smask = s < S
        jmask = j < W
        m, usage, _ = _write(mem_ptr, u_ptr, rw_ptr, add_ptr, alpha_ptr, ww_ptr, slots_ptr, b, H, S, W, s, j,
                             smask, jmask, True, BLOCK_S, BLOCK_W)
        tl.store(mo_ptr + b * S * W + s[:, None] * W + j[None, :], m, mask=smask[:, None] & jmask[None, :])
        minv = _inv_norms(m, eps)
        for h in range(H):
            k = tl.load(keys_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            _, w, reads, _ = _head_forward(m, minv, k, 1.0, smask, eps)
            tl.store(rwo_ptr + (b * H + h) * S + s, w, mask=smask)
            tl.store(reads_ptr + (b * H + h) * W + j, reads, mask=jmask)
            usage += w
        u = tl.load(u_ptr + b * S + s, mask=smask, other=0.0)
        tl.store(uo_ptr + b * S + s, gamma * u + usage, mask=smask)

    @triton.jit
    def _bwd_kernel(gmo_ptr, grwo_ptr, greads_ptr, guo_ptr, gww_ptr,
                    mem_ptr, u_ptr, rw_ptr, keys_ptr, add_ptr, alpha_ptr, slots_ptr,
                    gm_ptr, gu_ptr, grw_ptr, gk_ptr, gadd_ptr, galpha_ptr, H, S, W, gamma, eps,
                    BLOCK_S: tl.constexpr, BLOCK_W: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        s = tl.arange(0, BLOCK_S)
        j = tl.arange(0, BLOCK_W)
        smask = s < S
        jmask = j < W
        mask2 = smask[:, None] & jmask[None, :]
        offs = b * S * W + s[:, None] * W + j[None, :]
        m, _, first = _write(mem_ptr, u_ptr, rw_ptr, add_ptr, alpha_ptr, gww_ptr, slots_ptr, b, H, S, W, s, j,
                             smask, jmask, False, BLOCK_S, BLOCK_W)
        minv = _inv_norms(m, eps)
        g_u = tl.load(guo_ptr + b * S + s, mask=smask, other=0.0)  # usage' = γ·usage + Σ rw' + Σ ww
        g_mem = tl.load(gmo_ptr + offs, mask=mask2, other=0.0)  # the whole gradient of memory'
        for h in range(H):
            k = tl.load(keys_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            g_w = tl.load(grwo_ptr + (b * H + h) * S + s, mask=smask, other=0.0) + g_u
            g_r = tl.load(greads_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            g_m, g_k, _, _ = _head_backward(m, minv, k, 1.0, smask, g_w, g_r, eps)
            g_mem += g_m
            tl.store(gk_ptr + (b * H + h) * W + j, g_k, mask=jmask)
        # memory' = keep ⊙ memory + Σ_h ww[h] ⊗ add[h];  ww = alpha·rw + (1 − alpha)·one_hot(slot h).
        for h in range(H):
            slot = tl.load(slots_ptr + b * H + h)
            alpha = tl.load(alpha_ptr + b * H + h)
            rw = tl.load(rw_ptr + (b * H + h) * S + s, mask=smask, other=0.0)
            one_hot = tl.where(s == slot, 1.0, 0.0)
            ww = alpha * rw + (1.0 - alpha) * one_hot
            add = tl.load(add_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            g_ww = tl.load(gww_ptr + (b * H + h) * S + s, mask=smask, other=0.0) + g_u
            g_ww += tl.sum(g_mem * add[None, :], axis=1)
            tl.store(gadd_ptr + (b * H + h) * W + j, tl.sum(ww[:, None] * g_mem, axis=0), mask=jmask)
            tl.store(grw_ptr + (b * H + h) * S + s, alpha * g_ww, mask=smask)
            tl.store(galpha_ptr + b * H + h, tl.sum(tl.where(smask, g_ww * (rw - one_hot), 0.0), axis=0))
        keep = tl.where(s == first, 0.0, 1.0)
        tl.store(gm_ptr + offs, g_mem * keep[:, None], mask=mask2)
        tl.store(gu_ptr + b * S + s, gamma * g_u, mask=smask)


@torch.library.custom_op("metalearn_ext::mann_memory_step_triton", mutates_args=())
def _mann_memory_step_triton_op(memory: Tensor, usage: Tensor, read_weights: Tensor, keys: Tensor, add: Tensor,
                                alpha: Tensor, gamma: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    B, S, W = memory.shape
    H = keys.shape[1]
    memory, usage, read_weights, keys, add, alpha = (x.contiguous() for x in (memory, usage, read_weights, keys,
                                                                               add, alpha))
    outs = (torch.empty_like(memory), torch.empty_like(read_weights), torch.empty_like(keys),
            torch.empty_like(usage), torch.empty_like(read_weights))
    slots = torch.empty((B, H), dtype=torch.int32, device=memory.device)
    block_s, block_w = block_sizes(S, W)
    _fwd_kernel[(B,)](memory, usage, read_weights, keys, add, alpha, slots, *outs, H, S, W, float(gamma), COS_EPS,
                      BLOCK_S=block_s, BLOCK_W=block_w)
    return outs


@torch.library.custom_op("metalearn_ext::mann_memory_step_triton_backward", mutates_args=())
def _mann_memory_step_triton_backward_op(
    grad_memory_out: Tensor, grad_read_weights_out: Tensor, grad_reads: Tensor, grad_usage_out: Tensor,
    grad_write_weights: Tensor, memory: Tensor, usage: Tensor, read_weights: Tensor, keys: Tensor, add: Tensor,
    alpha: Tensor, gamma: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    B, S, W = memory.shape
    H = keys.shape[1]
    grads = [g.contiguous() for g in (grad_memory_out, grad_read_weights_out, grad_reads, grad_usage_out,
                                      grad_write_weights)]
    inputs = [x.contiguous() for x in (memory, usage, read_weights, keys, add, alpha)]
    outs = tuple(torch.empty_like(x) for x in inputs)
    slots = torch.empty((B, H), dtype=torch.int32, device=memory.device)
    block_s, block_w = block_sizes(S, W)
    _bwd_kernel[(B,)](*grads, *inputs, slots, *outs, H, S, W, float(gamma), COS_EPS, BLOCK_S=block_s,
                      BLOCK_W=block_w)
    return outs


autograd.register("metalearn_ext::mann_memory_step_triton", "metalearn_ext::mann_memory_step_triton_backward",
                  fake_mann_memory_step, mann_memory_step_reference)


def mann_memory_step_triton(memory: Tensor, usage: Tensor, read_weights: Tensor, keys: Tensor, add: Tensor,
                            alpha: Tensor, gamma: float = 0.95) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """mann_memory_step with the Triton kernels; differentiable, inputs untouched, any strides, float32 only.

    Shapes as mann_memory_step: memory (B, S, W), usage (B, S), read_weights (B, H, S), keys, add (B, H, W),
    alpha (B, H).
    """
    for name, x in zip(("memory", "usage", "read_weights", "keys", "add", "alpha"),
                       (memory, usage, read_weights, keys, add, alpha)):
        if x.dtype != torch.float32:
            raise ValueError(f"mann_memory_step triton backend: {name} must be float32, got {x.dtype}")
    return _mann_memory_step_triton_op(memory, usage, read_weights, keys, add, alpha, float(gamma))
