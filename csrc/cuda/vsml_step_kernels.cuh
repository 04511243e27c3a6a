// Device code of the fused VSML kernels (and the tile geometry they run on), shared by vsml_step.cu
// and by the CPU emulator in tests/cuda_emu/, which runs these exact kernels with one host thread per
// CUDA thread so that CI, which has no GPU, still tests their indexing, reductions and barriers.
//
// The including file provides the CUDA vocabulary (the CUDA toolkit, or tests/cuda_emu/shim.h),
// TORCH_CHECK / TORCH_CHECK_VALUE, and VSML_DYNAMIC_SHARED(name), which declares the block's dynamic
// shared memory as `float4 name[]`. Included once per translation unit, inside no namespace.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace metalearn_ext {
namespace {

constexpr int kForwardThreads = 256;
constexpr int kBackwardThreads = 128;
// Ticks of one synapse whose intermediates the backward keeps in registers; more ticks are handled in
// segments of this length, each recomputed from the initial state (O(K^2 / kStoredTicks) ticks).
constexpr int kStoredTicks = 2;
constexpr int kForwardMaxPasses = 16;
constexpr int kBackwardMaxPasses = 32;

// Fast intrinsics: absolute error about 3e-7 (sigmoid, tanh), well inside the fp32 tolerance of 1e-5.
// Both saturate correctly: __expf overflows to inf and __fdividef(x, inf) is 0.
__device__ __forceinline__ float sigmoid_fast(float x) { return __fdividef(1.0f, 1.0f + __expf(-x)); }
__device__ __forceinline__ float tanh_fast(float x) { return 1.0f - __fdividef(2.0f, 1.0f + __expf(2.0f * x)); }

// Rows i_j, f_j, g_j, o_j of one copy's W_h (4N x N, row-major, 16-byte aligned) into registers.
template <int N>
__device__ __forceinline__ void load_gate_rows(const float* wt, int j, float (&w)[4][N]) {
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    const float4* wr = reinterpret_cast<const float4*>(wt + (g * N + j) * N);
#pragma unroll
    for (int k4 = 0; k4 < N / 4; ++k4) {
      const float4 v = __ldg(wr + k4);
      w[g][4 * k4] = v.x, w[g][4 * k4 + 1] = v.y, w[g][4 * k4 + 2] = v.z, w[g][4 * k4 + 3] = v.w;
    }
  }
}

// Where a block's tile lies; identical for every block of a launch except through blockIdx.
struct Geometry {
  int64_t AB;           // synapses per copy
  int64_t tiles_per_t;  // tiles per copy
  int A, B;
  int tile;             // synapses per tile = P * passes
  int passes;
  int ticks;
  int nA_max;           // bound on the distinct a of one tile
  int nF_max;           // bound on the distinct b of one tile
  int p_div, p_mod;     // P / B and P % B: advancing a synapse index by P
  int w_per_copy;       // w_h is (T,4N,N) rather than (1,4N,N)
  float invA, invB;
};

struct TilePos {
  int64_t t, s0;  // copy, first synapse (a*B + b) of the tile
  int s_eff;      // synapses of this tile (the last tile of a copy may be partial)
  int a_first, b0;
};

__device__ __forceinline__ TilePos tile_position(const Geometry& geo) {
  TilePos p;
  p.t = static_cast<int64_t>(blockIdx.x) / geo.tiles_per_t;
  p.s0 = (static_cast<int64_t>(blockIdx.x) % geo.tiles_per_t) * geo.tile;
  p.s_eff = static_cast<int>(min(static_cast<int64_t>(geo.tile), geo.AB - p.s0));
  p.a_first = static_cast<int>(p.s0 / geo.B);
  p.b0 = static_cast<int>(p.s0 % geo.B);
  return p;
}

// Index of b among the tile's distinct b: (b - b0) mod B, always < nF_max (see make_geometry).
__device__ __forceinline__ int tile_b_index(int b, int b0, int B) {
  const int d = b - b0;
  return d < 0 ? d + B : d;
}

// Sums buffer rows [0, rows) of width `width` into dst rows, scaled: shared partials to global.
// Row r of the buffer belongs to global row (first + r) mod `wrap` (wrap = 0: no wrap).
__device__ __forceinline__ void flush_rows(const float* buf, int rows, int width, float* dst, int64_t dst_row0,
                                           int first, int wrap, float scale, int nthreads) {
  const int total = rows * width;
  for (int i = threadIdx.x; i < total; i += nthreads) {
    const int r = i / width, col = i - r * width;
    int gr = first + r;
    if (wrap > 0 && gr >= wrap) gr -= wrap;
    atomicAdd(dst + (dst_row0 + gr) * width + col, buf[i] * scale);
  }
}

template <int N>
struct FwdConfig {
  static constexpr int kMinBlocks = N == 8 ? 3 : N == 16 ? 2 : 1;
};

// ------------------------------------------------------------------------------------------------
// Forward: every thread runs all ticks of unit j of one synapse per pass in registers, then writes
// h', c' once and adds h' to the tile's mean partials.
// Shared memory (floats): hs [P][N] | fwdp [nF_max][N] | bwdp [nA_max][N].
template <int N>
__global__ void __launch_bounds__(kForwardThreads, FwdConfig<N>::kMinBlocks)
    vsml_forward_kernel(const float* __restrict__ h0, const float* __restrict__ c0, const float* __restrict__ row,
                        const float* __restrict__ col, const float* __restrict__ w_h, float* __restrict__ h_out,
                        float* __restrict__ c_out, float* __restrict__ fwd_mean, float* __restrict__ bwd_mean,
                        const Geometry geo) {
  constexpr int P = kForwardThreads / N;
  constexpr int G = 4 * N;
  VSML_DYNAMIC_SHARED(smem4);
  float* smem = reinterpret_cast<float*>(smem4);
  const int j = threadIdx.x % N, slot = threadIdx.x / N;
  float* my_h = smem + slot * N;
  float* fwdp = smem + P * N;
  float* bwdp = fwdp + geo.nF_max * N;

  const TilePos tp = tile_position(geo);
  for (int i = threadIdx.x; i < (geo.nF_max + geo.nA_max) * N; i += kForwardThreads) fwdp[i] = 0.0f;

  float w[4][N];  // rows i_j, f_j, g_j, o_j of W_h[t]
  load_gate_rows<N>(w_h + (geo.w_per_copy ? tp.t : int64_t{0}) * (G * N), j, w);
  __syncthreads();  // partials zeroed before any thread adds to them

  // This thread's synapse: q-th of the tile, (a, b) tracked incrementally (a may run past A when q is
  // past the tile; such a synapse is never loaded or stored).
  int q = slot;
  const unsigned bq = static_cast<unsigned>(tp.b0) + static_cast<unsigned>(slot);
  int a = tp.a_first + static_cast<int>(bq / static_cast<unsigned>(geo.B));
  int b = static_cast<int>(bq % static_cast<unsigned>(geo.B));
  const int64_t syn0 = tp.t * geo.AB + tp.s0;  // global index of the tile's first synapse

  // Prefetched operands of the next synapse (invalid: zeros, which keep the dummy ticks finite).
  bool nvalid = q < tp.s_eff;
  float nh = 0.0f, nc = 0.0f, nrow[4] = {0.0f, 0.0f, 0.0f, 0.0f}, ncol[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  auto load = [&]() {
    if (nvalid) {
      const int64_t e = (syn0 + q) * N + j;
      nh = __ldg(h0 + e);
      nc = __ldg(c0 + e);
      const float* r = row + (tp.t * geo.A + a) * G + j;
      const float* cl = col + (tp.t * geo.B + b) * G + j;
#pragma unroll
      for (int g = 0; g < 4; ++g) nrow[g] = __ldg(r + g * N), ncol[g] = __ldg(cl + g * N);
    } else {
      nh = nc = 0.0f;
#pragma unroll
      for (int g = 0; g < 4; ++g) nrow[g] = ncol[g] = 0.0f;
    }
  };
  load();

  for (int pass = 0; pass < geo.passes; ++pass) {
    float h = nh, c = nc;
    float base[4];
#pragma unroll
    for (int g = 0; g < 4; ++g) base[g] = nrow[g] + ncol[g];
    const bool valid = nvalid;
    const int cq = q, ca = a, cb = b;

    q += P;
    a += geo.p_div;
    b += geo.p_mod;
    if (b >= geo.B) b -= geo.B, ++a;
    nvalid = pass + 1 < geo.passes && q < tp.s_eff;
    load();

    for (int k = 0; k < geo.ticks; ++k) {
      my_h[j] = h;
      __syncwarp();
      float z0 = base[0], z1 = base[1], z2 = base[2], z3 = base[3];
#pragma unroll
      for (int k4 = 0; k4 < N / 4; ++k4) {
        const float4 hv = reinterpret_cast<const float4*>(my_h)[k4];
        z0 = fmaf(w[0][4 * k4], hv.x, z0), z1 = fmaf(w[1][4 * k4], hv.x, z1);
        z2 = fmaf(w[2][4 * k4], hv.x, z2), z3 = fmaf(w[3][4 * k4], hv.x, z3);
        z0 = fmaf(w[0][4 * k4 + 1], hv.y, z0), z1 = fmaf(w[1][4 * k4 + 1], hv.y, z1);
        z2 = fmaf(w[2][4 * k4 + 1], hv.y, z2), z3 = fmaf(w[3][4 * k4 + 1], hv.y, z3);
        z0 = fmaf(w[0][4 * k4 + 2], hv.z, z0), z1 = fmaf(w[1][4 * k4 + 2], hv.z, z1);
        z2 = fmaf(w[2][4 * k4 + 2], hv.z, z2), z3 = fmaf(w[3][4 * k4 + 2], hv.z, z3);
        z0 = fmaf(w[0][4 * k4 + 3], hv.w, z0), z1 = fmaf(w[1][4 * k4 + 3], hv.w, z1);
        z2 = fmaf(w[2][4 * k4 + 3], hv.w, z2), z3 = fmaf(w[3][4 * k4 + 3], hv.w, z3);
      }
      __syncwarp();  // every lane has read my_h before it is overwritten
      const float gi = sigmoid_fast(z0), gf = sigmoid_fast(z1), gg = tanh_fast(z2), go = sigmoid_fast(z3);
      c = gf * c + gi * gg;
      h = go * tanh_fast(c);
    }

    if (valid) {
      const int64_t e = (syn0 + cq) * N + j;
      h_out[e] = h;
      c_out[e] = c;
      atomicAdd(fwdp + tile_b_index(cb, tp.b0, geo.B) * N + j, h);
      atomicAdd(bwdp + (ca - tp.a_first) * N + j, h);
    }
  }

  __syncthreads();
  const int last_a = static_cast<int>((tp.s0 + tp.s_eff - 1) / geo.B);
  flush_rows(fwdp, min(geo.B, tp.s_eff), N, fwd_mean, tp.t * geo.B, tp.b0, geo.B, geo.invA, kForwardThreads);
  flush_rows(bwdp, last_a - tp.a_first + 1, N, bwd_mean, tp.t * geo.A, tp.a_first, 0, geo.invB, kForwardThreads);
}

template <int N>
struct BwdConfig {
  // N = 32 would need 256 registers for W_h rows plus the g_wh partials: W_h is read from shared memory.
  static constexpr bool kWInRegs = N <= 16;
  static constexpr int kMinBlocks = N == 8 ? 4 : N == 16 ? 3 : 2;
  static constexpr int kRedStride = N + 4;           // row stride of the W^T dz exchange (bank spread)
  static constexpr int kRedSlot = N * (N + 5);       // its slot stride: consecutive slots on other banks
  static constexpr int kWStride = N + 4;             // row stride of W_h in shared memory
};

// ------------------------------------------------------------------------------------------------
// Backward: per pass, every thread recomputes the ticks of unit j of its synapse (segments of
// kStoredTicks kept in registers), then walks them backwards. The W_h^T dz product is a reduction over
// the N lanes of a synapse, done through a per-synapse shared-memory block. g_wh partials stay in
// registers across all passes of the block.
// Shared memory (floats): hs [P][N] | red [P][kRedSlot] | gwhp [4N][N] | growp [nA_max][4N] |
//                         gcolp [nF_max][4N] | ws [4N][kWStride] (N = 32 only).
template <int N>
__global__ void __launch_bounds__(kBackwardThreads, BwdConfig<N>::kMinBlocks)
    vsml_backward_kernel(const float* __restrict__ grad_h, const float* __restrict__ grad_c,
                         const float* __restrict__ grad_fwd_mean, const float* __restrict__ grad_bwd_mean,
                         const float* __restrict__ h0, const float* __restrict__ c0, const float* __restrict__ row,
                         const float* __restrict__ col, const float* __restrict__ w_h, float* __restrict__ grad_h0,
                         float* __restrict__ grad_c0, float* __restrict__ g_row, float* __restrict__ g_col,
                         float* __restrict__ g_wh, const Geometry geo) {
  using Cfg = BwdConfig<N>;
  constexpr int P = kBackwardThreads / N;
  constexpr int G = 4 * N;
  constexpr int K = kStoredTicks;
  VSML_DYNAMIC_SHARED(smem4);
  float* smem = reinterpret_cast<float*>(smem4);
  const int j = threadIdx.x % N, slot = threadIdx.x / N;
  float* my_h = smem + slot * N;
  float* red = smem + P * N;
  float* my_red_row = red + slot * Cfg::kRedSlot + j * Cfg::kRedStride;  // written by this lane
  const float* my_red_col = red + slot * Cfg::kRedSlot + j;                // column j, read by this lane
  float* gwhp = red + P * Cfg::kRedSlot;
  float* growp = gwhp + G * N;
  float* gcolp = growp + geo.nA_max * G;
  float* ws = gcolp + geo.nF_max * G;

  const TilePos tp = tile_position(geo);
  const float* wt = w_h + (geo.w_per_copy ? tp.t : int64_t{0}) * (G * N);
  for (int i = threadIdx.x; i < G * N + (geo.nA_max + geo.nF_max) * G; i += kBackwardThreads) gwhp[i] = 0.0f;

  float w[Cfg::kWInRegs ? 4 : 1][Cfg::kWInRegs ? N : 1];
  if constexpr (Cfg::kWInRegs) {
    load_gate_rows<N>(wt, j, w);
  } else {
    for (int i = threadIdx.x; i < G * N; i += kBackwardThreads) ws[(i / N) * Cfg::kWStride + i % N] = __ldg(wt + i);
  }
  __syncthreads();

  // Four consecutive entries k4*4.. of gate row g of unit j.
  auto wrow = [&](int g, int k4) -> float4 {
    if constexpr (Cfg::kWInRegs) {
      return make_float4(w[g][4 * k4], w[g][4 * k4 + 1], w[g][4 * k4 + 2], w[g][4 * k4 + 3]);
    } else {
      return reinterpret_cast<const float4*>(ws + (g * N + j) * Cfg::kWStride)[k4];
    }
  };
  // One forward tick of unit j (h, c in/out); returns the gate activations and tanh(c').
  auto tick = [&](const float (&base)[4], float& h, float& c, float& gi, float& gf, float& gg, float& go,
                  float& tc) {
    my_h[j] = h;
    __syncwarp();
    float z0 = base[0], z1 = base[1], z2 = base[2], z3 = base[3];
#pragma unroll
    for (int k4 = 0; k4 < N / 4; ++k4) {
      const float4 hv = reinterpret_cast<const float4*>(my_h)[k4];
      const float4 w0 = wrow(0, k4), w1 = wrow(1, k4), w2 = wrow(2, k4), w3 = wrow(3, k4);
      z0 = fmaf(w0.x, hv.x, z0), z1 = fmaf(w1.x, hv.x, z1), z2 = fmaf(w2.x, hv.x, z2), z3 = fmaf(w3.x, hv.x, z3);
      z0 = fmaf(w0.y, hv.y, z0), z1 = fmaf(w1.y, hv.y, z1), z2 = fmaf(w2.y, hv.y, z2), z3 = fmaf(w3.y, hv.y, z3);
      z0 = fmaf(w0.z, hv.z, z0), z1 = fmaf(w1.z, hv.z, z1), z2 = fmaf(w2.z, hv.z, z2), z3 = fmaf(w3.z, hv.z, z3);
      z0 = fmaf(w0.w, hv.w, z0), z1 = fmaf(w1.w, hv.w, z1), z2 = fmaf(w2.w, hv.w, z2), z3 = fmaf(w3.w, hv.w, z3);
    }
    __syncwarp();
    gi = sigmoid_fast(z0), gf = sigmoid_fast(z1), gg = tanh_fast(z2), go = sigmoid_fast(z3);
    c = gf * c + gi * gg;
    tc = tanh_fast(c);
    h = go * tc;
  };

  float acc[4][N];  // g_wh rows i_j, f_j, g_j, o_j, summed over this thread's synapses and ticks
#pragma unroll
  for (int g = 0; g < 4; ++g)
#pragma unroll
    for (int k = 0; k < N; ++k) acc[g][k] = 0.0f;

  int q = slot;
  const unsigned bq = static_cast<unsigned>(tp.b0) + static_cast<unsigned>(slot);
  int a = tp.a_first + static_cast<int>(bq / static_cast<unsigned>(geo.B));
  int b = static_cast<int>(bq % static_cast<unsigned>(geo.B));
  const int64_t syn0 = tp.t * geo.AB + tp.s0;
  const int nseg = (geo.ticks + K - 1) / K;

  for (int pass = 0; pass < geo.passes; ++pass) {
    // Invalid lanes (past the tile) run on zeros: all their dz are 0, so they add nothing.
    const bool valid = q < tp.s_eff;
    const int64_t e = (syn0 + q) * N + j;
    float h_init = 0.0f, c_init = 0.0f, dh = 0.0f, dc = 0.0f, base[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (valid) {
      h_init = __ldg(h0 + e);
      c_init = __ldg(c0 + e);
      const float* r = row + (tp.t * geo.A + a) * G + j;
      const float* cl = col + (tp.t * geo.B + b) * G + j;
#pragma unroll
      for (int g = 0; g < 4; ++g) base[g] = __ldg(r + g * N) + __ldg(cl + g * N);
      dh = __ldg(grad_h + e) + __ldg(grad_fwd_mean + (tp.t * geo.B + b) * N + j) * geo.invA +
           __ldg(grad_bwd_mean + (tp.t * geo.A + a) * N + j) * geo.invB;
      dc = __ldg(grad_c + e);
    }
    float dzsum[4] = {0.0f, 0.0f, 0.0f, 0.0f};

    for (int sg = nseg - 1; sg >= 0; --sg) {
      const int k_begin = sg * K, len = min(K, geo.ticks - k_begin);
      float h = h_init, c = c_init, gi, gf, gg, go, tc;
      for (int k = 0; k < k_begin; ++k) tick(base, h, c, gi, gf, gg, go, tc);
      // Tick k_begin + kk: inputs h_prev, c_prev; gate activations; tanh of its new c.
      float s_h[K], s_c[K], s_i[K], s_f[K], s_g[K], s_o[K], s_tc[K];
#pragma unroll
      for (int kk = 0; kk < K; ++kk) {
        if (kk < len) {
          s_h[kk] = h, s_c[kk] = c;
          tick(base, h, c, s_i[kk], s_f[kk], s_g[kk], s_o[kk], s_tc[kk]);
        }
      }
#pragma unroll
      for (int kk = K - 1; kk >= 0; --kk) {
        if (kk < len) {
          const float i_ = s_i[kk], f_ = s_f[kk], g_ = s_g[kk], o_ = s_o[kk], tc_ = s_tc[kk];
          const float d_o = dh * tc_;
          dc = fmaf(dh * o_, 1.0f - tc_ * tc_, dc);
          const float dz0 = dc * g_ * i_ * (1.0f - i_);
          const float dz1 = dc * s_c[kk] * f_ * (1.0f - f_);
          const float dz2 = dc * i_ * (1.0f - g_ * g_);
          const float dz3 = d_o * o_ * (1.0f - o_);
          dc *= f_;  // now the gradient w.r.t. c_prev
          dzsum[0] += dz0, dzsum[1] += dz1, dzsum[2] += dz2, dzsum[3] += dz3;

          // Exchange h_prev (for g_wh) and this lane's share of W_h^T dz (for dh_prev).
          my_h[j] = s_h[kk];
#pragma unroll
          for (int k4 = 0; k4 < N / 4; ++k4) {
            const float4 w0 = wrow(0, k4), w1 = wrow(1, k4), w2 = wrow(2, k4), w3 = wrow(3, k4);
            float4 p;
            p.x = fmaf(w0.x, dz0, fmaf(w1.x, dz1, fmaf(w2.x, dz2, w3.x * dz3)));
            p.y = fmaf(w0.y, dz0, fmaf(w1.y, dz1, fmaf(w2.y, dz2, w3.y * dz3)));
            p.z = fmaf(w0.z, dz0, fmaf(w1.z, dz1, fmaf(w2.z, dz2, w3.z * dz3)));
            p.w = fmaf(w0.w, dz0, fmaf(w1.w, dz1, fmaf(w2.w, dz2, w3.w * dz3)));
            reinterpret_cast<float4*>(my_red_row)[k4] = p;
          }
          __syncwarp();
#pragma unroll
          for (int k4 = 0; k4 < N / 4; ++k4) {
            const float4 hv = reinterpret_cast<const float4*>(my_h)[k4];
            acc[0][4 * k4] = fmaf(dz0, hv.x, acc[0][4 * k4]), acc[1][4 * k4] = fmaf(dz1, hv.x, acc[1][4 * k4]);
            acc[2][4 * k4] = fmaf(dz2, hv.x, acc[2][4 * k4]), acc[3][4 * k4] = fmaf(dz3, hv.x, acc[3][4 * k4]);
            acc[0][4 * k4 + 1] = fmaf(dz0, hv.y, acc[0][4 * k4 + 1]);
            acc[1][4 * k4 + 1] = fmaf(dz1, hv.y, acc[1][4 * k4 + 1]);
            acc[2][4 * k4 + 1] = fmaf(dz2, hv.y, acc[2][4 * k4 + 1]);
            acc[3][4 * k4 + 1] = fmaf(dz3, hv.y, acc[3][4 * k4 + 1]);
            acc[0][4 * k4 + 2] = fmaf(dz0, hv.z, acc[0][4 * k4 + 2]);
            acc[1][4 * k4 + 2] = fmaf(dz1, hv.z, acc[1][4 * k4 + 2]);
            acc[2][4 * k4 + 2] = fmaf(dz2, hv.z, acc[2][4 * k4 + 2]);
            acc[3][4 * k4 + 2] = fmaf(dz3, hv.z, acc[3][4 * k4 + 2]);
            acc[0][4 * k4 + 3] = fmaf(dz0, hv.w, acc[0][4 * k4 + 3]);
            acc[1][4 * k4 + 3] = fmaf(dz1, hv.w, acc[1][4 * k4 + 3]);
            acc[2][4 * k4 + 3] = fmaf(dz2, hv.w, acc[2][4 * k4 + 3]);
            acc[3][4 * k4 + 3] = fmaf(dz3, hv.w, acc[3][4 * k4 + 3]);
          }
          float s = 0.0f;
#pragma unroll
          for (int jp = 0; jp < N; ++jp) s += my_red_col[jp * Cfg::kRedStride];
          __syncwarp();  // every lane has read my_h and red before they are overwritten
          dh = s;
        }
      }
    }

    if (valid) {
      grad_h0[e] = dh;
      grad_c0[e] = dc;
      float* gr = growp + (a - tp.a_first) * G + j;
      float* gc = gcolp + tile_b_index(b, tp.b0, geo.B) * G + j;
#pragma unroll
      for (int g = 0; g < 4; ++g) atomicAdd(gr + g * N, dzsum[g]), atomicAdd(gc + g * N, dzsum[g]);
    }
    q += P;
    a += geo.p_div;
    b += geo.p_mod;
    if (b >= geo.B) b -= geo.B, ++a;
  }

  // g_wh partials: first across the synapses sharing a warp (lanes j, j+N, ...), then across warps.
#pragma unroll
  for (int off = N; off < 32; off *= 2)
#pragma unroll
    for (int g = 0; g < 4; ++g)
#pragma unroll
      for (int k = 0; k < N; ++k) acc[g][k] += __shfl_xor_sync(0xffffffffu, acc[g][k], off);
  if ((threadIdx.x & 31) < N) {
#pragma unroll
    for (int g = 0; g < 4; ++g)
#pragma unroll
      for (int k = 0; k < N; ++k) atomicAdd(gwhp + (g * N + j) * N + k, acc[g][k]);
  }
  __syncthreads();
  const int last_a = static_cast<int>((tp.s0 + tp.s_eff - 1) / geo.B);
  flush_rows(gwhp, G, N, g_wh, tp.t * G, 0, 0, 1.0f, kBackwardThreads);
  flush_rows(growp, last_a - tp.a_first + 1, G, g_row, tp.t * geo.A, tp.a_first, 0, 1.0f, kBackwardThreads);
  flush_rows(gcolp, min(geo.B, tp.s_eff), G, g_col, tp.t * geo.B, tp.b0, geo.B, 1.0f, kBackwardThreads);
}

// ------------------------------------------------------------------------------------------------

// Tiles of P * passes synapses within one copy; passes chosen so that a launch has roughly
// `target_blocks` blocks (enough to fill the GPU, few enough to amortize the per-tile atomics).
template <int P>
Geometry make_geometry(int64_t T, int64_t A, int64_t B, int64_t ticks, bool w_per_copy, int max_passes,
                       int64_t target_blocks, const char* op) {
  // A block indexes synapses within a copy with int (headroom for a tile past the end).
  TORCH_CHECK_VALUE(A * B <= std::numeric_limits<int32_t>::max() - (1 << 20), op,
                    " (CUDA): A * B must be below 2^31 - 2^20, got A = ", A, ", B = ", B);
  TORCH_CHECK_VALUE(ticks <= std::numeric_limits<int32_t>::max(), op, " (CUDA): ticks too large: ", ticks);
  Geometry geo;
  geo.AB = A * B;
  geo.A = static_cast<int>(A);
  geo.B = static_cast<int>(B);
  const int64_t units = T * ((geo.AB + P - 1) / P);  // passes of one block-width over all copies
  geo.passes = static_cast<int>(std::clamp<int64_t>(units / std::max<int64_t>(target_blocks, 1), 1, max_passes));
  geo.tile = P * geo.passes;
  geo.tiles_per_t = (geo.AB + geo.tile - 1) / geo.tile;
  TORCH_CHECK(T * geo.tiles_per_t <= std::numeric_limits<int32_t>::max(), op, " (CUDA): too many blocks");
  geo.ticks = static_cast<int>(ticks);
  // A tile of S synapses starting at b0 < B covers floor((b0 + S - 1) / B) + 1 <= (S + B - 2) / B + 1 rows a,
  // and min(B, S) columns b, at index (b - b0) mod B < min(B, S).
  geo.nA_max = static_cast<int>(std::min<int64_t>(A, (geo.tile + B - 2) / B + 1));
  geo.nF_max = static_cast<int>(std::min<int64_t>(B, geo.tile));
  geo.p_div = static_cast<int>(P / B);
  geo.p_mod = static_cast<int>(P % B);
  geo.w_per_copy = w_per_copy ? 1 : 0;
  geo.invA = static_cast<float>(1.0 / static_cast<double>(A));
  geo.invB = static_cast<float>(1.0 / static_cast<double>(B));
  return geo;
}

// Dynamic shared memory of one block, in bytes (the launch and the emulator must agree).
template <int N>
size_t forward_smem_bytes(const Geometry& geo) {
  constexpr int P = kForwardThreads / N;
  return sizeof(float) * (P * N + static_cast<size_t>(geo.nF_max + geo.nA_max) * N);
}

template <int N>
size_t backward_smem_bytes(const Geometry& geo) {
  using Cfg = BwdConfig<N>;
  constexpr int P = kBackwardThreads / N;
  return sizeof(float) * (P * N + P * Cfg::kRedSlot + 4 * N * N + static_cast<size_t>(geo.nA_max + geo.nF_max) * 4 * N +
                          (Cfg::kWInRegs ? 0 : 4 * N * Cfg::kWStride));
}

}  // namespace
}  // namespace metalearn_ext
