"""Triton backend of ``content_read`` (specs/memory_np.md §1): fused forward and backward kernels.

Shapes: memory (B, S, W), keys (B, H, W), beta (B, H) or None. Returns weights (B, H, S), reads (B, H, W).

Design: one program per batch element b holds its whole memory (S, W) as one register tile (both padded
to powers of two) and loops over the H heads, so the memory is read from global memory once per step:
norms, cosines, the masked softmax over S and the weighted read are fused. The backward recomputes
the forward from the inputs and accumulates dL/dmemory over the heads in the same tile, so it needs
no atomics and is deterministic. The tile is S·W floats: fine for MANN's 128 × 40, register-heavy
(spills, still correct) for very large memories. The backward op is not itself differentiable: a
double backward runs through the reference (metalearn_ext/ops/autograd.py).

The per-head helpers below are reused by the mann_memory_step kernels.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import autograd
from metalearn_ext.ops.content_read.reference import COS_EPS, content_read_reference
from metalearn_ext.ops.content_read.shapes import fake_content_read
from metalearn_ext.ops.triton_support import tl, triton

__all__ = ["content_read_triton"]


def block_sizes(S: int, W: int) -> tuple[int, int]:
    """Power-of-two tile sizes covering S slots and W columns (at least 16: tl.arange's minimum size)."""
    return max(16, triton.next_power_of_2(S)), max(16, triton.next_power_of_2(W))


if triton is not None:

    @triton.jit
    def _inv_norms(m, eps):
        # m (BLOCK_S, BLOCK_W) -> (BLOCK_S,) 1 / sqrt(|row|^2 + eps)
        return 1.0 / tl.sqrt(tl.sum(m * m, axis=1) + eps)

    @triton.jit
    def _head_forward(m, minv, k, scale, smask, eps):
        # One head: cosines (BLOCK_S,), weights (BLOCK_S,) (0 on padded slots), reads (BLOCK_W,), kinv.
        kinv = 1.0 / tl.sqrt(tl.sum(k * k, axis=0) + eps)
        cos = tl.sum(m * k[None, :], axis=1) * kinv * minv
        z = tl.where(smask, cos * scale, float("-inf"))
        e = tl.exp(z - tl.max(z, axis=0))
        w = e / tl.sum(e, axis=0)
        reads = tl.sum(w[:, None] * m, axis=0)
        return cos, w, reads, kinv

    @triton.jit
    def _head_backward(m, minv, k, scale, smask, g_w, g_r, eps):
        # One head's gradients for upstream g_w (BLOCK_S,) on the weights and g_r (BLOCK_W,) on the reads:
        # (dL/dm contribution (BLOCK_S, BLOCK_W), dL/dk (BLOCK_W,), dL/dscale, weights).
        cos, w, _, kinv = _head_forward(m, minv, k, scale, smask, eps)
        g = g_w + tl.sum(m * g_r[None, :], axis=1)  # reads = w·M
        dz = w * (g - tl.sum(w * g, axis=0))  # softmax
        g_scale = tl.sum(dz * cos, axis=0)
        gc = dz * scale  # dL/dcos
        a = gc * kinv * minv
        g_k = tl.sum(a[:, None] * m, axis=0) - tl.sum(gc * cos, axis=0) * kinv * kinv * k
        g_m = w[:, None] * g_r[None, :] + a[:, None] * k[None, :] - (gc * cos * minv * minv)[:, None] * m
        return g_m, g_k, g_scale, w

    @triton.jit
    def _fwd_kernel(mem_ptr, keys_ptr, beta_ptr, w_ptr, r_ptr, H, S, W, eps,
                    HAS_BETA: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_W: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        s = tl.arange(0, BLOCK_S)
        j = tl.arange(0, BLOCK_W)
        smask = s < S
        jmask = j < W
        m = tl.load(mem_ptr + b * S * W + s[:, None] * W + j[None, :], mask=smask[:, None] & jmask[None, :],
                    other=0.0)
        minv = _inv_norms(m, eps)
        for h in range(H):
            k = tl.load(keys_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            scale = 1.0
            if HAS_BETA:
                scale = tl.load(beta_ptr + b * H + h)
            _, w, reads, _ = _head_forward(m, minv, k, scale, smask, eps)
            tl.store(w_ptr + (b * H + h) * S + s, w, mask=smask)
            tl.store(r_ptr + (b * H + h) * W + j, reads, mask=jmask)

    @triton.jit
    def _bwd_kernel(gw_ptr, gr_ptr, mem_ptr, keys_ptr, beta_ptr, gm_ptr, gk_ptr, gb_ptr, H, S, W, eps,
                    HAS_BETA: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_W: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        s = tl.arange(0, BLOCK_S)
        j = tl.arange(0, BLOCK_W)
        smask = s < S
        jmask = j < W
        mask2 = smask[:, None] & jmask[None, :]
        offs = b * S * W + s[:, None] * W + j[None, :]
        m = tl.load(mem_ptr + offs, mask=mask2, other=0.0)
        minv = _inv_norms(m, eps)
        g_mem = tl.zeros((BLOCK_S, BLOCK_W), dtype=tl.float32)
        for h in range(H):
            k = tl.load(keys_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            scale = 1.0
            if HAS_BETA:
                scale = tl.load(beta_ptr + b * H + h)
            g_w = tl.load(gw_ptr + (b * H + h) * S + s, mask=smask, other=0.0)
            g_r = tl.load(gr_ptr + (b * H + h) * W + j, mask=jmask, other=0.0)
            g_m, g_k, g_scale, _ = _head_backward(m, minv, k, scale, smask, g_w, g_r, eps)
            g_mem += g_m
            tl.store(gk_ptr + (b * H + h) * W + j, g_k, mask=jmask)
            if HAS_BETA:
                tl.store(gb_ptr + b * H + h, g_scale)
        tl.store(gm_ptr + offs, g_mem, mask=mask2)


@torch.library.custom_op("metalearn_ext::content_read_triton", mutates_args=())
def _content_read_triton_op(memory: Tensor, keys: Tensor, beta: Tensor | None) -> tuple[Tensor, Tensor]:
    B, S, W = memory.shape
    H = keys.shape[1]
    memory, keys = memory.contiguous(), keys.contiguous()
    beta_c = beta.contiguous() if beta is not None else memory  # a placeholder pointer, never read
    weights = memory.new_empty((B, H, S))
    reads = memory.new_empty((B, H, W))
    block_s, block_w = block_sizes(S, W)
    _fwd_kernel[(B,)](memory, keys, beta_c, weights, reads, H, S, W, COS_EPS, HAS_BETA=beta is not None,
                      BLOCK_S=block_s, BLOCK_W=block_w)
    return weights, reads


@torch.library.custom_op("metalearn_ext::content_read_triton_backward", mutates_args=())
def _content_read_triton_backward_op(grad_weights: Tensor, grad_reads: Tensor, memory: Tensor, keys: Tensor,
                                     beta: Tensor | None) -> list[Tensor]:
    B, S, W = memory.shape
    H = keys.shape[1]
    memory, keys = memory.contiguous(), keys.contiguous()
    grad_weights, grad_reads = grad_weights.contiguous(), grad_reads.contiguous()
    beta_c = beta.contiguous() if beta is not None else memory
    grad_memory, grad_keys = torch.empty_like(memory), torch.empty_like(keys)
    grad_beta = memory.new_empty((B, H)) if beta is not None else memory
    block_s, block_w = block_sizes(S, W)
    _bwd_kernel[(B,)](grad_weights, grad_reads, memory, keys, beta_c, grad_memory, grad_keys, grad_beta, H, S, W,
                      COS_EPS, HAS_BETA=beta is not None, BLOCK_S=block_s, BLOCK_W=block_w)
    return [grad_memory, grad_keys] + ([grad_beta] if beta is not None else [])


autograd.register("metalearn_ext::content_read_triton", "metalearn_ext::content_read_triton_backward",
                  fake_content_read, content_read_reference)


def content_read_triton(memory: Tensor, keys: Tensor, beta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """content_read with the Triton kernels; differentiable, inputs untouched, any strides, float32 only.

    memory (B, S, W), keys (B, H, W), beta (B, H) or None -> weights (B, H, S), reads (B, H, W).
    """
    for name, x in (("memory", memory), ("keys", keys), ("beta", beta)):
        if x is not None and x.dtype != torch.float32:
            raise ValueError(f"content_read triton backend: {name} must be float32, got {x.dtype}")
    return _content_read_triton_op(memory, keys, beta)
