"""Triton backend of ``vsml_step`` (specs/vsml.md §1): fused forward and backward kernels.

Shapes: h, c (T, A, B, N); fwd_in (T, A, M); bwd_in (T, B, M);
weight (4N, 2M+N) or (T, 4N, 2M+N), columns [W_fwd | W_bwd | W_h]; bias (4N,) or (T, 4N).
Returns h', c' (T, A, B, N), fwd_mean (T, B, N) = mean_a h', bwd_mean (T, A, N) = mean_b h'.

Design:
* The messages are fixed over the ticks of a step, so torch matmuls project them once per
  row / column before the kernel: row = fwd_in·W_fwdᵀ + bias (T, A, 4N), col = bwd_in·W_bwdᵀ
  (T, B, 4N). The kernels only see row, col and W_h (T or 1, 4N, N).
* One program owns a tile of BLOCK_A × BLOCK_B synapses of one copy t. It loads h, c once,
  runs every tick in registers (four N×N gate products: tl.dot in IEEE fp32 when N ≥ 16,
  a broadcast multiply-and-sum for smaller N) and writes h', c' once: the state crosses
  memory exactly once each way, which is the op's memory-bound floor. (Measured on an H200,
  N = 16, 2 ticks, the kernel is bound by the fp32 gate products, not by memory: see the
  backend's benchmark before relying on a speed.)
* The means are fused: each tile reduces its h' over a and over b in registers and adds the
  partial sums, scaled by 1/A and 1/B, into zeroed fp32 buffers with atomics. A layout where
  one program owns whole rows *and* whole columns does not exist, so one of the two means
  needs a cross-program reduction anyway; atomics of (BLOCK_B + BLOCK_A)·N floats per tile are
  a small fraction of the tile's 4·BLOCK_A·BLOCK_B·N floats of state traffic and avoid a
  second pass over h'. (Summation order is therefore not deterministic at the ulp level.)
* BLOCK_B is the largest power of two (≤ 64, ≤ the tile) that pads B by at most B/16, so a
  small B (e.g. 10 classes) is not padded to 16; BLOCK_A fills the rest of the tile.
* Backward recomputes from the saved inputs only (memory stays O(inputs)): for tick
  k = ticks..1 it reruns the forward from the initial state to tick k−1 in registers
  (O(ticks²) ticks, ticks is small), then backpropagates through tick k. Per tile it sums the
  gate pre-activation gradients over ticks and reduces them over b (→ g_row) and over a
  (→ g_col) with atomics; g_wh = Σ dz ⊗ h_prev is accumulated in registers across the tiles
  of a persistent program and added once per program, so the shared (4N, N) block sees few
  atomics. A torch epilogue turns g_row / g_col / g_wh into the input, weight and bias grads.
* The backward op is not itself differentiable: a double backward runs through the reference
  (metalearn_ext/ops/autograd.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metalearn_ext.ops import autograd
from metalearn_ext.ops.triton_support import INTERPRETED, tl, triton
from metalearn_ext.ops.vsml_step.reference import message_gradients, project_messages, vsml_step_reference
from metalearn_ext.ops.vsml_step.shapes import fake_vsml_step

__all__ = ["vsml_step_triton"]

_MAX_N = 64


# --------------------------------------------------------------------------------------------
# Kernels: defined at import when triton is present (Triton resolves the helpers they call
# as module globals, so they cannot live inside a lazily called builder).
# --------------------------------------------------------------------------------------------


def _pick_block_b(b: int, block_s: int) -> int:
    best = 1
    bb = 1
    while bb <= min(block_s, 64):
        if -(-b // bb) * bb - b <= b // 16:
            best = bb
        bb *= 2
    return best


def _configs() -> list:
    if INTERPRETED:  # the interpreter is slow: a single small tile, no tuning
        return [triton.Config({"BLOCK_S": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_S": 32}, num_warps=2),
        triton.Config({"BLOCK_S": 64}, num_warps=4),
        triton.Config({"BLOCK_S": 128}, num_warps=4),
        triton.Config({"BLOCK_S": 128}, num_warps=8),
        triton.Config({"BLOCK_S": 256}, num_warps=8),
    ]


_HEURISTICS = {
    "BLOCK_B": lambda args: _pick_block_b(args["B"], args["BLOCK_S"]),
    "BLOCK_A": lambda args: (
        args["BLOCK_S"] // _pick_block_b(args["B"], args["BLOCK_S"])
    ),
    "USE_DOT": lambda args: args["N"] >= 16 and args["BLOCK_S"] >= 16,
}


if triton is not None:

    @triton.jit
    def _tanh(x):
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0

    @triton.jit
    def _matvec(x, w, USE_DOT: tl.constexpr):
        # out[s, j] = sum_n x[s, n] * w[n, j]
        if USE_DOT:
            return tl.dot(x, w, input_precision="ieee")
        else:
            return tl.sum(x[:, :, None] * w[None, :, :], axis=1)

    @triton.jit
    def _outer_sum(dz, hp, USE_DOT: tl.constexpr):
        # out[j, n] = sum_s dz[s, j] * hp[s, n]
        if USE_DOT:
            return tl.dot(tl.trans(dz), hp, input_precision="ieee")
        else:
            return tl.sum(dz[:, :, None] * hp[:, None, :], axis=0)

    @triton.jit
    def _tick(h, c, mi, mf, mg, mo, wti, wtf, wtg, wto, USE_DOT: tl.constexpr):
        i = tl.sigmoid(mi + _matvec(h, wti, USE_DOT))
        f = tl.sigmoid(mf + _matvec(h, wtf, USE_DOT))
        g = _tanh(mg + _matvec(h, wtg, USE_DOT))
        o = tl.sigmoid(mo + _matvec(h, wto, USE_DOT))
        c = f * c + i * g
        h = o * _tanh(c)
        return h, c

    @triton.jit
    def _load_msg(
        row_base,
        col_base,
        ra,
        rb,
        n,
        A,
        B,
        gate: tl.constexpr,
        N: tl.constexpr,
        BLOCK_A: tl.constexpr,
        BLOCK_B: tl.constexpr,
    ):
        # row[t, a, gate*N + n] + col[t, b, gate*N + n] for every synapse of the tile, as (S, N)
        r = tl.load(
            row_base + ra[:, None] * (4 * N) + gate * N + n[None, :],
            mask=(ra < A)[:, None],
            other=0.0,
        )
        q = tl.load(
            col_base + rb[:, None] * (4 * N) + gate * N + n[None, :],
            mask=(rb < B)[:, None],
            other=0.0,
        )
        return tl.reshape(r[:, None, :] + q[None, :, :], (BLOCK_A * BLOCK_B, N))

    @triton.jit
    def _load_wt(w_base, j, n, gate: tl.constexpr, N: tl.constexpr):
        # W_h[gate*N + j, n] laid out as (n, j): the right operand of h @ W_gateᵀ
        return tl.load(w_base + (gate * N + j[None, :]) * N + n[:, None])

    @triton.jit
    def _load_w(w_base, j, n, gate: tl.constexpr, N: tl.constexpr):
        # W_h[gate*N + j, n] laid out as (j, n): the right operand of dz @ W_gate
        return tl.load(w_base + (gate * N + j[:, None]) * N + n[None, :])

    @triton.autotune(
        configs=_configs(),
        key=["A", "B", "N", "ticks"],
        reset_to_zero=["fm_ptr", "bm_ptr"],
    )
    @triton.heuristics(_HEURISTICS)
    @triton.jit
    def _fwd_kernel(
        h_ptr,
        c_ptr,
        row_ptr,
        col_ptr,
        wh_ptr,
        ho_ptr,
        co_ptr,
        fm_ptr,
        bm_ptr,
        A,
        B,
        stride_wt,
        ticks,
        inv_a,
        inv_b,
        N: tl.constexpr,
        BLOCK_S: tl.constexpr,
        BLOCK_A: tl.constexpr,
        BLOCK_B: tl.constexpr,
        USE_DOT: tl.constexpr,
    ):
        pid = tl.program_id(0)
        tiles_b = tl.cdiv(B, BLOCK_B)
        tiles = tl.cdiv(A, BLOCK_A) * tiles_b
        t = (pid // tiles).to(tl.int64)
        tile = pid % tiles
        a0 = (tile // tiles_b) * BLOCK_A
        b0 = (tile % tiles_b) * BLOCK_B

        n = tl.arange(0, N)
        ra = a0 + tl.arange(0, BLOCK_A)
        rb = b0 + tl.arange(0, BLOCK_B)
        s = tl.arange(0, BLOCK_S)
        sa = a0 + s // BLOCK_B
        sb = b0 + s % BLOCK_B
        smask = (sa < A) & (sb < B)
        offs = (((t * A + sa) * B + sb) * N)[:, None] + n[None, :]
        mask2 = smask[:, None]

        h = tl.load(h_ptr + offs, mask=mask2, other=0.0)
        c = tl.load(c_ptr + offs, mask=mask2, other=0.0)
        row_base = row_ptr + t * A * (4 * N)
        col_base = col_ptr + t * B * (4 * N)
        mi = _load_msg(row_base, col_base, ra, rb, n, A, B, 0, N, BLOCK_A, BLOCK_B)
        mf = _load_msg(row_base, col_base, ra, rb, n, A, B, 1, N, BLOCK_A, BLOCK_B)
        mg = _load_msg(row_base, col_base, ra, rb, n, A, B, 2, N, BLOCK_A, BLOCK_B)
        mo = _load_msg(row_base, col_base, ra, rb, n, A, B, 3, N, BLOCK_A, BLOCK_B)
        w_base = wh_ptr + t * stride_wt
        wti = _load_wt(w_base, n, n, 0, N)
        wtf = _load_wt(w_base, n, n, 1, N)
        wtg = _load_wt(w_base, n, n, 2, N)
        wto = _load_wt(w_base, n, n, 3, N)

        for _ in range(ticks):
            h, c = _tick(h, c, mi, mf, mg, mo, wti, wtf, wtg, wto, USE_DOT)

        tl.store(ho_ptr + offs, h, mask=mask2)
        tl.store(co_ptr + offs, c, mask=mask2)

        hz = tl.reshape(tl.where(mask2, h, 0.0), (BLOCK_A, BLOCK_B, N))
        fm = tl.sum(hz, axis=0) * inv_a  # (BLOCK_B, N): partial mean over a
        bm = tl.sum(hz, axis=1) * inv_b  # (BLOCK_A, N): partial mean over b
        # Masks spelled out at full shape: the interpreter does not broadcast atomic masks.
        nmask = (n < N)[None, :]
        tl.atomic_add(
            fm_ptr + (t * B + rb)[:, None] * N + n[None, :],
            fm,
            mask=(rb < B)[:, None] & nmask,
        )
        tl.atomic_add(
            bm_ptr + (t * A + ra)[:, None] * N + n[None, :],
            bm,
            mask=(ra < A)[:, None] & nmask,
        )

    @triton.autotune(
        configs=_configs(),
        key=["A", "B", "N", "ticks"],
        reset_to_zero=["grow_ptr", "gcol_ptr", "gwh_ptr"],
    )
    @triton.heuristics(_HEURISTICS)
    @triton.jit
    def _bwd_kernel(
        h_ptr,
        c_ptr,
        row_ptr,
        col_ptr,
        wh_ptr,
        gh_ptr,
        gc_ptr,
        gfm_ptr,
        gbm_ptr,
        gh0_ptr,
        gc0_ptr,
        grow_ptr,
        gcol_ptr,
        gwh_ptr,
        T,
        A,
        B,
        stride_wt,
        ticks,
        inv_a,
        inv_b,
        N: tl.constexpr,
        BLOCK_S: tl.constexpr,
        BLOCK_A: tl.constexpr,
        BLOCK_B: tl.constexpr,
        USE_DOT: tl.constexpr,
    ):
        pid = tl.program_id(0)
        programs_per_t = tl.num_programs(0) // T
        t = (pid // programs_per_t).to(tl.int64)
        p = pid % programs_per_t
        tiles_b = tl.cdiv(B, BLOCK_B)
        tiles = tl.cdiv(A, BLOCK_A) * tiles_b

        n = tl.arange(0, N)
        s = tl.arange(0, BLOCK_S)
        row_base = row_ptr + t * A * (4 * N)
        col_base = col_ptr + t * B * (4 * N)
        w_base = wh_ptr + t * stride_wt
        wti = _load_wt(w_base, n, n, 0, N)
        wtf = _load_wt(w_base, n, n, 1, N)
        wtg = _load_wt(w_base, n, n, 2, N)
        wto = _load_wt(w_base, n, n, 3, N)
        wi = _load_w(w_base, n, n, 0, N)
        wf = _load_w(w_base, n, n, 1, N)
        wg = _load_w(w_base, n, n, 2, N)
        wo = _load_w(w_base, n, n, 3, N)

        gwi = tl.zeros((N, N), dtype=tl.float32)
        gwf = tl.zeros((N, N), dtype=tl.float32)
        gwg = tl.zeros((N, N), dtype=tl.float32)
        gwo = tl.zeros((N, N), dtype=tl.float32)

        for tile in range(p, tiles, programs_per_t):
            a0 = (tile // tiles_b) * BLOCK_A
            b0 = (tile % tiles_b) * BLOCK_B
            ra = a0 + tl.arange(0, BLOCK_A)
            rb = b0 + tl.arange(0, BLOCK_B)
            sa = a0 + s // BLOCK_B
            sb = b0 + s % BLOCK_B
            smask = (sa < A) & (sb < B)
            offs = (((t * A + sa) * B + sb) * N)[:, None] + n[None, :]
            mask2 = smask[:, None]
            # Full-shape masks: the interpreter does not broadcast atomic masks.
            ramask = (ra < A)[:, None] & (n < N)[None, :]
            rbmask = (rb < B)[:, None] & (n < N)[None, :]

            h0 = tl.load(h_ptr + offs, mask=mask2, other=0.0)
            c0 = tl.load(c_ptr + offs, mask=mask2, other=0.0)
            mi = _load_msg(row_base, col_base, ra, rb, n, A, B, 0, N, BLOCK_A, BLOCK_B)
            mf = _load_msg(row_base, col_base, ra, rb, n, A, B, 1, N, BLOCK_A, BLOCK_B)
            mg = _load_msg(row_base, col_base, ra, rb, n, A, B, 2, N, BLOCK_A, BLOCK_B)
            mo = _load_msg(row_base, col_base, ra, rb, n, A, B, 3, N, BLOCK_A, BLOCK_B)

            # Gradient arriving on the final h: its own, plus both means' (masked lanes stay 0).
            gfm = (
                tl.load(
                    gfm_ptr + (t * B + rb)[:, None] * N + n[None, :],
                    mask=rbmask,
                    other=0.0,
                )
                * inv_a
            )
            gbm = (
                tl.load(
                    gbm_ptr + (t * A + ra)[:, None] * N + n[None, :],
                    mask=ramask,
                    other=0.0,
                )
                * inv_b
            )
            dh = tl.load(gh_ptr + offs, mask=mask2, other=0.0)
            dh += tl.reshape(gbm[:, None, :] + gfm[None, :, :], (BLOCK_S, N))
            dh = tl.where(mask2, dh, 0.0)
            dc = tl.load(gc_ptr + offs, mask=mask2, other=0.0)

            szi = tl.zeros((BLOCK_S, N), dtype=tl.float32)
            szf = tl.zeros((BLOCK_S, N), dtype=tl.float32)
            szg = tl.zeros((BLOCK_S, N), dtype=tl.float32)
            szo = tl.zeros((BLOCK_S, N), dtype=tl.float32)
            for kk in range(ticks):
                # Recompute the state entering tick k = ticks - kk from the saved inputs.
                hp = h0
                cp = c0
                for _ in range(ticks - 1 - kk):
                    hp, cp = _tick(hp, cp, mi, mf, mg, mo, wti, wtf, wtg, wto, USE_DOT)
                si = tl.sigmoid(mi + _matvec(hp, wti, USE_DOT))
                sf = tl.sigmoid(mf + _matvec(hp, wtf, USE_DOT))
                tg = _tanh(mg + _matvec(hp, wtg, USE_DOT))
                so = tl.sigmoid(mo + _matvec(hp, wto, USE_DOT))
                tc = _tanh(sf * cp + si * tg)

                dcn = dc + dh * so * (1.0 - tc * tc)
                dzo = dh * tc * so * (1.0 - so)
                dzi = dcn * tg * si * (1.0 - si)
                dzf = dcn * cp * sf * (1.0 - sf)
                dzg = dcn * si * (1.0 - tg * tg)
                dc = dcn * sf
                dh = (
                    _matvec(dzi, wi, USE_DOT)
                    + _matvec(dzf, wf, USE_DOT)
                    + _matvec(dzg, wg, USE_DOT)
                    + _matvec(dzo, wo, USE_DOT)
                )

                szi += dzi
                szf += dzf
                szg += dzg
                szo += dzo
                gwi += _outer_sum(dzi, hp, USE_DOT)
                gwf += _outer_sum(dzf, hp, USE_DOT)
                gwg += _outer_sum(dzg, hp, USE_DOT)
                gwo += _outer_sum(dzo, hp, USE_DOT)

            tl.store(gh0_ptr + offs, dh, mask=mask2)
            tl.store(gc0_ptr + offs, dc, mask=mask2)

            grow_base = grow_ptr + (t * A + ra)[:, None] * (4 * N) + n[None, :]
            gcol_base = gcol_ptr + (t * B + rb)[:, None] * (4 * N) + n[None, :]
            z3 = tl.reshape(szi, (BLOCK_A, BLOCK_B, N))
            tl.atomic_add(grow_base, tl.sum(z3, axis=1), mask=ramask)
            tl.atomic_add(gcol_base, tl.sum(z3, axis=0), mask=rbmask)
            z3 = tl.reshape(szf, (BLOCK_A, BLOCK_B, N))
            tl.atomic_add(grow_base + N, tl.sum(z3, axis=1), mask=ramask)
            tl.atomic_add(gcol_base + N, tl.sum(z3, axis=0), mask=rbmask)
            z3 = tl.reshape(szg, (BLOCK_A, BLOCK_B, N))
            tl.atomic_add(grow_base + 2 * N, tl.sum(z3, axis=1), mask=ramask)
            tl.atomic_add(gcol_base + 2 * N, tl.sum(z3, axis=0), mask=rbmask)
            z3 = tl.reshape(szo, (BLOCK_A, BLOCK_B, N))
            tl.atomic_add(grow_base + 3 * N, tl.sum(z3, axis=1), mask=ramask)
            tl.atomic_add(gcol_base + 3 * N, tl.sum(z3, axis=0), mask=rbmask)

        gw_base = gwh_ptr + t * (4 * N * N) + n[:, None] * N + n[None, :]
        tl.atomic_add(gw_base, gwi)
        tl.atomic_add(gw_base + N * N, gwf)
        tl.atomic_add(gw_base + 2 * N * N, gwg)
        tl.atomic_add(gw_base + 3 * N * N, gwo)


# --------------------------------------------------------------------------------------------
# Host side: torch.library custom ops around the kernels
# --------------------------------------------------------------------------------------------


def _cdiv(x: int, y: int) -> int:
    return -(-x // y)


def _programs_per_copy(tiles: int, T: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(tiles, _cdiv(8 * sms, T)))
    return max(1, min(tiles, 2))  # interpreter: still run the persistent loop over several tiles


@torch.library.custom_op("metalearn_ext::vsml_step_triton", mutates_args=())
def _vsml_step_triton_op(
    h: Tensor, c: Tensor, fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor, ticks: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    T, A, B, N = h.shape
    h, c = h.contiguous(), c.contiguous()
    row, col, w_h = project_messages(fwd_in.contiguous(), bwd_in.contiguous(), weight, bias)
    w_h = w_h.contiguous()
    h_out, c_out = torch.empty_like(h), torch.empty_like(c)
    fwd_mean = h.new_zeros((T, B, N))  # the kernels add tile partial sums atomically
    bwd_mean = h.new_zeros((T, A, N))

    def grid(meta: dict) -> tuple[int]:
        return (T * _cdiv(A, meta["BLOCK_A"]) * _cdiv(B, meta["BLOCK_B"]),)

    _fwd_kernel[grid](h, c, row, col, w_h, h_out, c_out, fwd_mean, bwd_mean, A, B,
                      w_h.stride(0) if w_h.shape[0] > 1 else 0, int(ticks), 1.0 / A, 1.0 / B, N=N)
    return h_out, c_out, fwd_mean, bwd_mean


@torch.library.custom_op("metalearn_ext::vsml_step_triton_backward", mutates_args=())
def _vsml_step_triton_backward_op(
    grad_h: Tensor, grad_c: Tensor, grad_fwd_mean: Tensor, grad_bwd_mean: Tensor, h: Tensor, c: Tensor,
    fwd_in: Tensor, bwd_in: Tensor, weight: Tensor, bias: Tensor, ticks: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, A, B, N = h.shape
    h, c, fwd_in, bwd_in = h.contiguous(), c.contiguous(), fwd_in.contiguous(), bwd_in.contiguous()
    grad_h, grad_c = grad_h.contiguous(), grad_c.contiguous()
    grad_fwd_mean, grad_bwd_mean = grad_fwd_mean.contiguous(), grad_bwd_mean.contiguous()
    row, col, w_h = project_messages(fwd_in, bwd_in, weight, bias)
    w_h = w_h.contiguous()
    grad_h0, grad_c0 = torch.empty_like(h), torch.empty_like(c)
    g_row = h.new_zeros((T, A, 4 * N))  # sums over tiles, added atomically
    g_col = h.new_zeros((T, B, 4 * N))
    g_wh = h.new_zeros((T, 4 * N, N))

    def grid(meta: dict) -> tuple[int]:
        tiles = _cdiv(A, meta["BLOCK_A"]) * _cdiv(B, meta["BLOCK_B"])
        return (T * _programs_per_copy(tiles, T, h.device),)

    _bwd_kernel[grid](h, c, row, col, w_h, grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, grad_h0, grad_c0,
                      g_row, g_col, g_wh, T, A, B, w_h.stride(0) if w_h.shape[0] > 1 else 0, int(ticks),
                      1.0 / A, 1.0 / B, N=N)
    return (grad_h0, grad_c0, *message_gradients(g_row, g_col, g_wh, fwd_in, bwd_in, weight, bias))


autograd.register("metalearn_ext::vsml_step_triton", "metalearn_ext::vsml_step_triton_backward", fake_vsml_step,
                  vsml_step_reference)


def vsml_step_triton(
    h: Tensor,
    c: Tensor,
    fwd_in: Tensor,
    bwd_in: Tensor,
    weight: Tensor,
    bias: Tensor,
    ticks: int = 1,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One VSML step with the Triton kernels; differentiable, inputs untouched, any strides.

    Shapes: h, c (T, A, B, N); fwd_in (T, A, M); bwd_in (T, B, M);
    weight (4N, 2M+N) or (T, 4N, 2M+N); bias (4N,) or (T, 4N); float32 only; N a power of two ≤ 64.
    Returns h', c' (T, A, B, N), fwd_mean (T, B, N), bwd_mean (T, A, N).
    """
    for name, x in (
        ("h", h),
        ("c", c),
        ("fwd_in", fwd_in),
        ("bwd_in", bwd_in),
        ("weight", weight),
        ("bias", bias),
    ):
        if x.dtype != torch.float32:
            raise ValueError(
                f"vsml_step triton backend: {name} must be float32, got {x.dtype}"
            )
    n = h.shape[-1]
    if n < 1 or n > _MAX_N or n & (n - 1):
        raise ValueError(
            f"vsml_step triton backend: N (state size, h.shape[-1]) must be a power of two "
            f"≤ {_MAX_N}, got N={n}"
        )
    return _vsml_step_triton_op(h, c, fwd_in, bwd_in, weight, bias, int(ticks))
