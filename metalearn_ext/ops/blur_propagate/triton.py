"""Triton backend of ``blur_propagate`` (specs/blur.md §3), and the product it is built on.

Shapes: a (T, B, I, k) (transpose: (T, B, J, k)); weight (T, I, J, k); mix (k, k) or (T, k, k).
Returns (T, B, J, k) (transpose: (T, B, I, k)).

Design:
* The op is k batched matrix products, one per state channel c: out[t,:,:,c] = m[t,:,:,c] @ w[t,:,:,c]
  (transpose: @ w[t,:,:,c]ᵀ). One program owns a BLOCK_B × BLOCK_O output tile of one (t, c) and runs
  over the contraction in BLOCK_R steps with tl.dot (IEEE fp32). Operands are read through their
  strides, so neither the channel-strided synapses nor a transposed view is ever copied.
* The k×k mix is folded into the prologue: each step loads the k states of its BLOCK_B × BLOCK_R
  neurons and mixes them in registers (k FMAs per element, against BLOCK_O FMAs of the product), so
  the mixed states never exist in memory.
* The backward is two more products (the gradient of the mixed states is a transposed product, the
  weight gradient a Hebbian product, ops/blur_hebbian/triton.py) and k×k-sized torch contractions:
  memory stays O(inputs). It is not itself differentiable: a double backward runs through the
  reference (metalearn_ext/ops/autograd.py).
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import autograd
from metalearn_ext.ops.blur_propagate.reference import blur_propagate_reference
from metalearn_ext.ops.blur_propagate.shapes import fake_blur_propagate
from metalearn_ext.ops.triton_support import INTERPRETED, tl, triton

__all__ = ["blur_propagate_triton", "mix_grad", "propagate_product"]


def _blocks() -> dict:
    if INTERPRETED:  # the interpreter is slow: one small tile, no tuning
        return dict(BLOCK_B=16, BLOCK_O=16, BLOCK_R=16, num_warps=1)
    return dict(BLOCK_B=32, BLOCK_O=64, BLOCK_R=32, num_warps=4)


if triton is not None:

    @triton.jit
    def _propagate_kernel(
        a_ptr, w_ptr, mix_ptr, out_ptr,
        B, NR, NO, K,
        sa_t, sa_b, sa_r, sa_c,
        sw_t, sw_r, sw_o, sw_c,
        smix_t,
        so_t, so_b, so_o, so_c,
        HAS_MIX: tl.constexpr,
        BLOCK_B: tl.constexpr,
        BLOCK_O: tl.constexpr,
        BLOCK_R: tl.constexpr,
    ):
        # out[t,b,o,c] = Σ_r (mix·a)[t,b,r,c] · w[t,r,o,c]; the caller maps (r, o) to (i, j) or (j, i) by strides.
        pid_tc = tl.program_id(0)
        t = (pid_tc // K).to(tl.int64)
        c = pid_tc % K
        rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
        ro = tl.program_id(2) * BLOCK_O + tl.arange(0, BLOCK_O)
        a_base = a_ptr + t * sa_t + rb[:, None] * sa_b
        w_base = w_ptr + t * sw_t + c * sw_c + ro[None, :] * sw_o
        acc = tl.zeros((BLOCK_B, BLOCK_O), dtype=tl.float32)
        for r0 in range(0, NR, BLOCK_R):
            rr = r0 + tl.arange(0, BLOCK_R)
            amask = (rb < B)[:, None] & (rr < NR)[None, :]
            if HAS_MIX:
                m = tl.zeros((BLOCK_B, BLOCK_R), dtype=tl.float32)
                for d in range(0, K):
                    mcd = tl.load(mix_ptr + t * smix_t + c * K + d)
                    m += mcd * tl.load(a_base + rr[None, :] * sa_r + d * sa_c, mask=amask, other=0.0)
            else:
                m = tl.load(a_base + rr[None, :] * sa_r + c * sa_c, mask=amask, other=0.0)
            wt = tl.load(w_base + rr[:, None] * sw_r, mask=(rr < NR)[:, None] & (ro < NO)[None, :], other=0.0)
            acc += tl.dot(m, wt, input_precision="ieee")
        omask = (rb < B)[:, None] & (ro < NO)[None, :]
        tl.store(out_ptr + t * so_t + rb[:, None] * so_b + ro[None, :] * so_o + c * so_c, acc, mask=omask)


def _cdiv(x: int, y: int) -> int:
    return -(-x // y)


def mix3(mix: Tensor) -> Tensor:
    """(k, k) or (T, k, k) as (Tm, k, k) contiguous."""
    return (mix.unsqueeze(0) if mix.dim() == 2 else mix).contiguous()


def mix_grad(x: Tensor, y: Tensor, mix: Tensor) -> Tensor:
    """Σ over all but the last axis of x[.., c] y[.., d]: (k, k), or (T, k, k) for a per-copy mix."""
    k = x.shape[-1]
    if mix.dim() == 2:
        return x.reshape(-1, k).t() @ y.reshape(-1, k)
    return x.reshape(x.shape[0], -1, k).transpose(1, 2) @ y.reshape(y.shape[0], -1, k)


def mix4(mix: Tensor) -> Tensor:
    """mix broadcastable against (T, B, n, k) states in a matmul."""
    return mix if mix.dim() == 2 else mix.unsqueeze(1)


def propagate_product(a: Tensor, weight: Tensor, mix: Tensor | None, transpose: bool) -> Tensor:
    """out[t,b,j,c] = Σ_i w[t,i,j,c] (mix·a)[t,b,i,c] (transpose: Σ_j w[t,i,j,c] (mix·a)[t,b,j,c]); mix None:
    no mix. float32, any strides. a (T, B, I, k) (transpose: (T, B, J, k)), weight (T, I, J, k)."""
    T, I, J, k = weight.shape
    B = a.shape[1]
    NR, NO = (J, I) if transpose else (I, J)
    out = a.new_empty((T, B, NO, k))
    sw = weight.stride()
    sw_r, sw_o = (sw[2], sw[1]) if transpose else (sw[1], sw[2])
    m = mix3(mix) if mix is not None else a  # a stands in for the unused pointer
    smix_t = k * k if mix is not None and mix.dim() == 3 else 0
    blocks = _blocks()
    grid = (T * k, _cdiv(B, blocks["BLOCK_B"]), _cdiv(NO, blocks["BLOCK_O"]))
    _propagate_kernel[grid](a, weight, m, out, B, NR, NO, k, *a.stride(), sw[0], sw_r, sw_o, sw[3], smix_t,
                            *out.stride(), HAS_MIX=mix is not None, **blocks)
    return out


@torch.library.custom_op("metalearn_ext::blur_propagate_triton", mutates_args=())
def _blur_propagate_triton_op(a: Tensor, weight: Tensor, mix: Tensor, transpose: bool) -> Tensor:
    return propagate_product(a, weight, mix, transpose)


@torch.library.custom_op("metalearn_ext::blur_propagate_triton_backward", mutates_args=())
def _blur_propagate_triton_backward_op(grad: Tensor, a: Tensor, weight: Tensor, mix: Tensor, transpose: bool
                                       ) -> tuple[Tensor, Tensor, Tensor]:
    from metalearn_ext.ops.blur_hebbian.triton import hebbian_product

    if not transpose:
        grad_m = propagate_product(grad, weight, None, True)  # Σ_j w[i,j,c] g[b,j,c]
        grad_w = hebbian_product(a, grad, mix3(mix).transpose(1, 2), None)  # Σ_b (mix·a)[b,i,c] g[b,j,c]
    else:
        grad_m = propagate_product(grad, weight, None, False)  # Σ_i g[b,i,c] w[i,j,c]
        grad_w = hebbian_product(grad, a, None, mix3(mix))  # Σ_b g[b,i,c] (mix·a)[b,j,c]
    return grad_m @ mix4(mix), grad_w, mix_grad(grad_m, a, mix)


autograd.register("metalearn_ext::blur_propagate_triton", "metalearn_ext::blur_propagate_triton_backward",
                  fake_blur_propagate, blur_propagate_reference)


def blur_propagate_triton(a: Tensor, weight: Tensor, mix: Tensor, transpose: bool = False) -> Tensor:
    """blur_propagate with the Triton kernel; differentiable, inputs untouched, any strides, float32 only.
    Shapes as in `metalearn_ext.ops.blur_propagate`."""
    for name, x in (("a", a), ("weight", weight), ("mix", mix)):
        if x.dtype != torch.float32:
            raise ValueError(f"blur_propagate triton backend: {name} must be float32, got {x.dtype}")
    return _blur_propagate_triton_op(a, weight, mix, transpose)
