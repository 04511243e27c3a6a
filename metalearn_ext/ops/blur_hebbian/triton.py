"""Triton backend of ``blur_hebbian`` (specs/blur.md §2–3), and the Hebbian product it is built on.

Shapes: weight (T, I, J, k); pre (T, B, I, k); post (T, B, J, k); pre_mix, post_mix (k, k) or (T, k, k);
decay, lr (T,). Returns (T, I, J, k).

Design:
* One program owns the column block (t, all i, BLOCK_J outputs j, channel c). For each BLOCK_I rows it
  forms Σ_b p[t,b,i,c] q[t,b,j,c] with tl.dot over BLOCK_B steps of the batch, p and q mixed in the
  prologue from the raw states (k FMAs per element), and applies the epilogue while the tile is in
  registers: alpha·w + lr·product with alpha = decay − lr·Σ_b q² (Oja) or decay. The synapses are read
  once and the result written once.
* Normalization divides each column (t, ·, j, c) by its L2 norm over i, which the program owning the
  column accumulates as it goes; the tiles it wrote are then rescaled in a second sweep of its own
  column block (L2-resident on a GPU), after a barrier because the store and the reload may map a tile
  to different threads.
* The backward recomputes the product from the inputs and uses the propagate product
  (ops/blur_propagate/triton.py) for the gradients of the mixed states; the rest are elementwise or
  k×k-sized torch ops, so memory stays O(inputs). Not itself differentiable: a double backward runs
  through the reference (metalearn_ext/ops/autograd.py).
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import autograd
from metalearn_ext.ops.blur_hebbian.reference import NORM_EPS, blur_hebbian_reference
from metalearn_ext.ops.blur_hebbian.shapes import fake_blur_hebbian
from metalearn_ext.ops.blur_propagate.triton import mix3, mix4, mix_grad, propagate_product
from metalearn_ext.ops.triton_support import INTERPRETED, tl, triton

__all__ = ["blur_hebbian_triton", "hebbian_product"]


def _blocks() -> dict:
    if INTERPRETED:
        return dict(BLOCK_I=16, BLOCK_J=16, BLOCK_B=16, num_warps=1)
    return dict(BLOCK_I=64, BLOCK_J=32, BLOCK_B=32, num_warps=4)


if triton is not None:

    @triton.jit
    def _mixed(base, s_n, s_c, rb, rn, B, Nn, mix_ptr, s_mix_e, K, HAS_MIX: tl.constexpr,
               BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
        # (BLOCK_B, BLOCK_N) tile of Σ_e x[b, n, e] · mix_ptr[e·s_mix_e]; without a mix, x itself (the caller
        # points mix_ptr, or base, at channel c).
        mask = (rb < B)[:, None] & (rn < Nn)[None, :]
        ptrs = base + rn[None, :] * s_n
        if HAS_MIX:
            acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
            for e in range(0, K):
                acc += tl.load(mix_ptr + e * s_mix_e) * tl.load(ptrs + e * s_c, mask=mask, other=0.0)
            return acc
        else:
            return tl.load(ptrs, mask=mask, other=0.0)

    @triton.jit
    def _hebbian_kernel(
        w_ptr, pre_ptr, post_ptr, pmix_ptr, qmix_ptr, alpha_ptr, lr_ptr, out_ptr,
        B, I, J, K,
        sw_t, sw_i, sw_j, sw_c,
        sp_t, sp_b, sp_i, sp_c,
        sq_t, sq_b, sq_j, sq_c,
        spm_t, sqm_t,
        sa_t, sa_j, sa_c,
        s_lr,
        so_t, so_i, so_j, so_c,
        eps,
        HAS_W: tl.constexpr, HAS_PMIX: tl.constexpr, HAS_QMIX: tl.constexpr, NORMALIZE: tl.constexpr,
        BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_B: tl.constexpr,
    ):
        pid_tc = tl.program_id(0)
        t = (pid_tc // K).to(tl.int64)
        c = pid_tc % K
        rj = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
        jmask = rj < J
        if HAS_W:
            lr = tl.load(lr_ptr + t * s_lr)
            alpha = tl.load(alpha_ptr + t * sa_t + rj * sa_j + c * sa_c, mask=jmask, other=0.0)
        # p mixes pre with pre_mix[e, c] (stride K over e); q mixes post with post_mix[c, d] (stride 1 over d).
        pre_base = pre_ptr + t * sp_t
        if not HAS_PMIX:
            pre_base += c * sp_c
        post_base = post_ptr + t * sq_t
        if not HAS_QMIX:
            post_base += c * sq_c
        colsq = tl.zeros((BLOCK_J,), dtype=tl.float32)
        for i0 in range(0, I, BLOCK_I):
            ri = i0 + tl.arange(0, BLOCK_I)
            acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
            for b0 in range(0, B, BLOCK_B):
                rb = b0 + tl.arange(0, BLOCK_B)
                p = _mixed(pre_base + rb[:, None] * sp_b, sp_i, sp_c, rb, ri, B, I, pmix_ptr + t * spm_t + c, K,
                           K, HAS_PMIX, BLOCK_B, BLOCK_I)
                q = _mixed(post_base + rb[:, None] * sq_b, sq_j, sq_c, rb, rj, B, J, qmix_ptr + t * sqm_t + c * K,
                           1, K, HAS_QMIX, BLOCK_B, BLOCK_J)
                acc += tl.dot(tl.trans(p), q, input_precision="ieee")
            mask = (ri < I)[:, None] & jmask[None, :]
            if HAS_W:
                w = tl.load(w_ptr + t * sw_t + ri[:, None] * sw_i + rj[None, :] * sw_j + c * sw_c, mask=mask, other=0.0)
                acc = alpha[None, :] * w + lr * acc
            tl.store(out_ptr + t * so_t + ri[:, None] * so_i + rj[None, :] * so_j + c * so_c, acc, mask=mask)
            if NORMALIZE:
                colsq += tl.sum(tl.where(mask, acc * acc, 0.0), axis=0)
        if NORMALIZE:
            tl.debug_barrier()
            scale = 1.0 / tl.sqrt(colsq + eps)
            for i0 in range(0, I, BLOCK_I):
                ri = i0 + tl.arange(0, BLOCK_I)
                mask = (ri < I)[:, None] & jmask[None, :]
                ptrs = out_ptr + t * so_t + ri[:, None] * so_i + rj[None, :] * so_j + c * so_c
                tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) * scale[None, :], mask=mask)


def _cdiv(x: int, y: int) -> int:
    return -(-x // y)


def hebbian_product(pre: Tensor, post: Tensor, pre_mix: Tensor | None, post_mix: Tensor | None,
                    weight: Tensor | None = None, alpha: Tensor | None = None, lr: Tensor | None = None,
                    normalize: bool = False) -> Tensor:
    """(T, I, J, k): Σ_b p[t,b,i,c] q[t,b,j,c] with p = pre·pre_mix (Σ_e pre[..,e] pre_mix[e,c]) and
    q[.., c] = Σ_d post_mix[c,d] post[.., d] (a mix None: none); with weight: alpha·weight + lr·that, alpha
    (T, J, k), lr (T,); normalize: each (t, ·, j, c) column divided by its L2 norm. float32, any strides."""
    T, B, I, k = pre.shape
    J = post.shape[2]
    out = pre.new_empty((T, I, J, k))
    pm = mix3(pre_mix) if pre_mix is not None else pre
    qm = mix3(post_mix) if post_mix is not None else pre
    spm_t = k * k if pre_mix is not None and pm.shape[0] > 1 else 0
    sqm_t = k * k if post_mix is not None and qm.shape[0] > 1 else 0
    has_w = weight is not None
    w = weight if has_w else out  # unused pointers
    al = alpha if has_w else out
    lr_ = lr if has_w else out
    blocks = _blocks()
    grid = (T * k, _cdiv(J, blocks["BLOCK_J"]))
    _hebbian_kernel[grid](
        w, pre, post, pm, qm, al, lr_, out, B, I, J, k, *w.stride(), *pre.stride(),
        *post.stride(), spm_t, sqm_t, *(al.stride() if has_w else (0, 0, 0)), lr_.stride(0) if has_w else 0,
        *out.stride(), NORM_EPS, HAS_W=has_w, HAS_PMIX=pre_mix is not None, HAS_QMIX=post_mix is not None,
        NORMALIZE=normalize, **blocks)
    return out


def _mixed_post(post: Tensor, post_mix: Tensor) -> Tensor:
    return post @ mix4(post_mix).transpose(-1, -2)


@torch.library.custom_op("metalearn_ext::blur_hebbian_triton", mutates_args=())
def _blur_hebbian_triton_op(weight: Tensor, pre: Tensor, post: Tensor, pre_mix: Tensor, post_mix: Tensor,
                            decay: Tensor, lr: Tensor, normalize: bool, oja: bool) -> Tensor:
    T, _, J, k = weight.shape
    alpha = decay[:, None, None].expand(T, J, k)
    if oja:  # alpha = decay − lr·Σ_b q²: a (T, J, k) reduction of the mixed post states
        alpha = alpha - lr[:, None, None] * _mixed_post(post, post_mix).square().sum(1)
    return hebbian_product(pre, post, pre_mix, post_mix, weight, alpha, lr, normalize)


@torch.library.custom_op("metalearn_ext::blur_hebbian_triton_backward", mutates_args=())
def _blur_hebbian_triton_backward_op(
    grad: Tensor, weight: Tensor, pre: Tensor, post: Tensor, pre_mix: Tensor, post_mix: Tensor, decay: Tensor,
    lr: Tensor, normalize: bool, oja: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T = weight.shape[0]
    q = _mixed_post(post, post_mix)
    p = pre @ mix4(pre_mix)
    hebb = hebbian_product(p, q, None, None)
    lr4, decay4 = lr.view(T, 1, 1, 1), decay.view(T, 1, 1, 1)
    q_sq = q.square().sum(1, keepdim=True) if oja else None
    alpha = decay4 - lr4 * q_sq if oja else decay4
    u = alpha * weight + lr4 * hebb
    grad_u = grad
    if normalize:  # out = u·r, r = (Σ_i u² + eps)^(-1/2): grad_u = r·(grad − out·Σ_i grad·out)
        r = torch.rsqrt(u.square().sum(1, keepdim=True) + NORM_EPS)
        out = u * r
        grad_u = r * (grad - out * (grad * out).sum(1, keepdim=True))
    gw_sum = (grad_u * weight).sum(1, keepdim=True)
    grad_lr = (grad_u * hebb).sum((1, 2, 3))
    if oja:
        grad_lr = grad_lr - (q_sq * gw_sum).sum((1, 2, 3))
    grad_p = propagate_product(q, grad_u, None, True) * lr4  # lr Σ_j grad_u[i,j,c] q[b,j,c]
    grad_q = propagate_product(p, grad_u, None, False) * lr4  # lr Σ_i grad_u[i,j,c] p[b,i,c]
    if oja:
        grad_q = grad_q - 2 * lr4 * q * gw_sum
    return (alpha * grad_u, grad_p @ mix4(pre_mix).transpose(-1, -2), grad_q @ mix4(post_mix),
            mix_grad(pre, grad_p, pre_mix), mix_grad(grad_q, post, post_mix), gw_sum.sum((1, 2, 3)), grad_lr)


autograd.register("metalearn_ext::blur_hebbian_triton", "metalearn_ext::blur_hebbian_triton_backward",
                  fake_blur_hebbian, blur_hebbian_reference)


def blur_hebbian_triton(weight: Tensor, pre: Tensor, post: Tensor, pre_mix: Tensor, post_mix: Tensor, decay: Tensor,
                        lr: Tensor, normalize: bool = True, oja: bool = False) -> Tensor:
    """blur_hebbian with the Triton kernel; decay and lr (T,) tensors; differentiable, inputs untouched, any
    strides, float32 only. Shapes as in `metalearn_ext.ops.blur_hebbian`."""
    for name, x in (("weight", weight), ("pre", pre), ("post", post), ("pre_mix", pre_mix), ("post_mix", post_mix),
                    ("decay", decay), ("lr", lr)):
        if x.dtype != torch.float32:
            raise ValueError(f"blur_hebbian triton backend: {name} must be float32, got {x.dtype}")
    return _blur_hebbian_triton_op(weight, pre, post, pre_mix, post_mix, decay, lr, normalize, oja)
