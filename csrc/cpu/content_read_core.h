// The content read of one batch element (specs/memory_np.md §1), forward and backward, for the CPU
// kernels of content_read and mann_memory_step. Everything is always-inlined, so an entry point
// compiled for another ISA (cpu/isa_dispatch.h) gets its own copy.
//
// Every product runs over the memory's contiguous rows, register-blocked (explicit 8-lane vectors for float,
// no -ffast-math): gemm_acc along W (reads, gradients of keys and memory), rows_dot along S (cosines, the
// slots' norms, the reads' gradient on the weights); float softmax rows use the vector exp of cpu/simd_exp.h,
// double the libm exp (exact for gradcheck). The 8-lane vectors are AVX2 registers: the SSE2 baseline
// build (CPUs without AVX2) is correct but splits them and is several times slower.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/simd.h"
#include "cpu/simd_exp.h"

namespace metalearn_ext::cpu {

template <typename T>
METALEARN_INLINE T row_dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
METALEARN_INLINE void row_axpy(T* y, T a, const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Y[h·ldy + 0:n] += Σ_r X[h·xh + r·xr]·A[r·lda + 0:n] for h < nh: a small matrix product (nh, rows)·(rows, n)
// accumulated into Y, X read with any strides (xh = 1, xr = S reads a transposed (rows, S) matrix). Every
// product of the content read is this shape, all heads at once, so each row of A is loaded once per head group.
template <typename T>
METALEARN_INLINE void gemm_acc(const T* X, int64_t xh, int64_t xr, int64_t nh, const T* A, int64_t lda, int64_t rows,
                               int64_t n, T* Y, int64_t ldy) {
  for (int64_t h = 0; h < nh; ++h)
    for (int64_t r = 0; r < rows; ++r) row_axpy(Y + h * ldy, X[h * xh + r * xr], A + r * lda, n);
}

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
using V8 = Vec<8>::f;
// x in all 8 lanes: one vbroadcastss. These helpers are compiled for the baseline ISA before being inlined
// into an AVX2/AVX-512 entry point, and GCC expands the obvious spellings (V8{x, ..., x}, x - V8{}) there
// as eight scalar inserts; a shuffle of a 4-lane vector survives as a broadcast.
METALEARN_INLINE V8 splat8(float x) {
  const Vec<4>::f v{x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
METALEARN_INLINE V8 splat8_at(const float* p) { return splat8(*p); }
// Σ of the 8 lanes, in a fixed order.
METALEARN_INLINE float lane_sum(V8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// float: 8 lanes of partial sums, then the tail.
METALEARN_INLINE float row_dot(const float* a, const float* b, int64_t n) {
  V8 acc0{}, acc1{};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 += vload<V8>(a + i) * vload<V8>(b + i);
    acc1 += vload<V8>(a + i + 8) * vload<V8>(b + i + 8);
  }
  if (i + 8 <= n) acc0 += vload<V8>(a + i) * vload<V8>(b + i), i += 8;
  float s = lane_sum(acc0 + acc1);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// NH outputs × NV vectors of 8 columns in registers, over all rows: each A row is loaded once for NH outputs.
template <int NH, int NV>
METALEARN_INLINE void gemm_block(const float* X, int64_t xh, int64_t xr, const float* A, int64_t lda, int64_t rows,
                                 float* Y, int64_t ldy) {
  V8 acc[NH][NV];
  for (int h = 0; h < NH; ++h)
    for (int v = 0; v < NV; ++v) acc[h][v] = vload<V8>(Y + h * ldy + 8 * v);
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = A + r * lda;
    V8 a[NV];
    for (int v = 0; v < NV; ++v) a[v] = vload<V8>(p + 8 * v);
    for (int h = 0; h < NH; ++h) {
      const V8 x = splat8_at(X + h * xh + r * xr);
      for (int v = 0; v < NV; ++v) acc[h][v] += x * a[v];
    }
  }
  for (int h = 0; h < NH; ++h)
    for (int v = 0; v < NV; ++v) vstore(Y + h * ldy + 8 * v, acc[h][v]);
}

template <int NH>
METALEARN_INLINE void gemm_rows(const float* X, int64_t xh, int64_t xr, const float* A, int64_t lda, int64_t rows,
                                int64_t n, float* Y, int64_t ldy) {
  int64_t i = 0;
  for (; i + 40 <= n; i += 40) gemm_block<NH, 5>(X, xh, xr, A + i, lda, rows, Y + i, ldy);
  switch ((n - i) / 8) {
    case 4: gemm_block<NH, 4>(X, xh, xr, A + i, lda, rows, Y + i, ldy), i += 32; break;
    case 3: gemm_block<NH, 3>(X, xh, xr, A + i, lda, rows, Y + i, ldy), i += 24; break;
    case 2: gemm_block<NH, 2>(X, xh, xr, A + i, lda, rows, Y + i, ldy), i += 16; break;
    case 1: gemm_block<NH, 1>(X, xh, xr, A + i, lda, rows, Y + i, ldy), i += 8; break;
    default: break;
  }
  for (; i < n; ++i)
    for (int h = 0; h < NH; ++h) {
      float acc = Y[h * ldy + i];
      for (int64_t r = 0; r < rows; ++r) acc += X[h * xh + r * xr] * A[r * lda + i];
      Y[h * ldy + i] = acc;
    }
}

// float: outputs in pairs, each A row (up to 40 columns at once: MANN's W) loaded once for both: 10
// accumulators, 5 loaded vectors and a broadcast fit AVX2's 16 registers, and each broadcast (3 instructions:
// splat8) serves up to 5 FMAs.
METALEARN_INLINE void gemm_acc(const float* X, int64_t xh, int64_t xr, int64_t nh, const float* A, int64_t lda,
                               int64_t rows, int64_t n, float* Y, int64_t ldy) {
  int64_t h = 0;
  for (; h + 2 <= nh; h += 2) gemm_rows<2>(X + h * xh, xh, xr, A, lda, rows, n, Y + h * ldy, ldy);
  if (h < nh) gemm_rows<1>(X + h * xh, xh, xr, A, lda, rows, n, Y + h * ldy, ldy);
}

#pragma GCC diagnostic pop
#endif

// Y[h·S + s] += Σ_w X[h·W + w]·M[s·W + w] for h < nh, s < S: X (nh,W)·Mᵀ straight from M's (S,W) rows, no
// transposed copy; and, when sq is not nullptr, sq[s] = |M[s]|² (the squared norms of the rows, overwritten)
// in the same pass over M.
template <typename T>
METALEARN_INLINE void rows_dot(const T* X, int64_t nh, const T* M, int64_t S, int64_t W, T* Y, T* sq = nullptr) {
  if (sq)
    for (int64_t s = 0; s < S; ++s) sq[s] = row_dot(M + s * W, M + s * W, W);
  for (int64_t h = 0; h < nh; ++h)
    for (int64_t s = 0; s < S; ++s) Y[h * S + s] += row_dot(X + h * W, M + s * W, W);
}

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// The 8 lane sums of v[0..7] as one vector, lane i = Σ v[i] (three levels of pairwise adds, a fixed order).
METALEARN_INLINE V8 lane_sums8(const V8* v) {
  V8 t[4], u[2];
  for (int i = 0; i < 4; ++i)
    t[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 2, 8, 10, 4, 6, 12, 14) +
           __builtin_shufflevector(v[2 * i], v[2 * i + 1], 1, 3, 9, 11, 5, 7, 13, 15);
  for (int i = 0; i < 2; ++i)
    u[i] = __builtin_shufflevector(t[2 * i], t[2 * i + 1], 0, 2, 8, 10, 4, 6, 12, 14) +
           __builtin_shufflevector(t[2 * i], t[2 * i + 1], 1, 3, 9, 11, 5, 7, 13, 15);
  return __builtin_shufflevector(u[0], u[1], 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(u[0], u[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

// float: 8 slots against NX rows of X (and, kSq, against themselves), one 8-lane partial sum per (row, slot)
// over W, then lane_sums8 (fewer shuffles than an 8×8 transpose of the memory, and no copy to store and
// reload). Each memory vector is loaded once for all NX + kSq products; at most 2 of them, so that the 16
// accumulators and the loaded vectors stay in registers.
template <int NX, bool kSq>
METALEARN_INLINE void rows_dot_block(const float* X, const float* M, int64_t W, float* Y, int64_t ldy, float* sq) {
  constexpr int R = NX + (kSq ? 1 : 0);
  const int64_t W8 = W & ~int64_t{7};
  V8 acc[R][8];
  for (int j = 0; j < R; ++j)  // element by element: "= {}" is a memset of the stack copy (rep stos) GCC keeps
    for (int i = 0; i < 8; ++i) acc[j][i] = V8{};
  for (int64_t c = 0; c < W8; c += 8) {
    V8 k[NX > 0 ? NX : 1];
    for (int j = 0; j < NX; ++j) k[j] = vload<V8>(X + j * W + c);
    for (int i = 0; i < 8; ++i) {
      const V8 m = vload<V8>(M + i * W + c);
      if (kSq) acc[0][i] += m * m;
      for (int j = 0; j < NX; ++j) acc[R - NX + j][i] += k[j] * m;
    }
  }
  if (kSq) {
    V8 r = lane_sums8(acc[0]);
    for (int64_t c = W8; c < W; ++c)
      for (int i = 0; i < 8; ++i) r[i] += M[i * W + c] * M[i * W + c];
    vstore(sq, r);
  }
  for (int j = 0; j < NX; ++j) {
    V8 r = lane_sums8(acc[R - NX + j]);
    for (int64_t c = W8; c < W; ++c)
      for (int i = 0; i < 8; ++i) r[i] += X[j * W + c] * M[i * W + c];
    vstore(Y + j * ldy, vload<V8>(Y + j * ldy) + r);
  }
}

METALEARN_INLINE void rows_dot(const float* X, int64_t nh, const float* M, int64_t S, int64_t W, float* Y,
                               float* sq = nullptr) {
  const int64_t S8 = S & ~int64_t{7};
  for (int64_t s = 0; s < S8; s += 8) {  // all products of 8 slots while their rows sit in L1
    const float* m = M + s * W;
    int64_t h = 0;
    if (sq) {
      if (nh > 0) {
        rows_dot_block<1, true>(X, m, W, Y + s, S, sq + s), h = 1;
      } else {
        rows_dot_block<0, true>(X, m, W, Y + s, S, sq + s);
      }
    }
    for (; h + 2 <= nh; h += 2) rows_dot_block<2, false>(X + h * W, m, W, Y + h * S + s, S, nullptr);
    if (h < nh) rows_dot_block<1, false>(X + h * W, m, W, Y + h * S + s, S, nullptr);
  }
  for (int64_t s = S8; s < S; ++s) {
    if (sq) sq[s] = row_dot(M + s * W, M + s * W, W);
    for (int64_t h = 0; h < nh; ++h) Y[h * S + s] += row_dot(X + h * W, M + s * W, W);
  }
}
#pragma GCC diagnostic pop
#endif

// x[0:n] = (x + eps)^-1/2 in place.
template <typename T>
METALEARN_INLINE void inverse_norms(T* x, int64_t n, T eps) {
  for (int64_t i = 0; i < n; ++i) x[i] = T(1) / std::sqrt(x[i] + eps);
}

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// float: 8 lanes at once. std::sqrt must keep errno, so GCC never vectorizes it, and a vector sqrt is not
// portable vector-extension code: a bit-level first guess of x^-1/2 (relative error ≤ 3.5%) and Newton
// steps y ← y·(3/2 − (x/2)·y²), each squaring the relative error (3.5e-2, 1.8e-3, 5e-6, then float
// rounding: a few ulp). x ≥ eps > 0 is a positive normal float; +inf and NaN come out NaN, as their
// cosines would anyway. double keeps the exact 1/std::sqrt above (gradcheck).
METALEARN_INLINE void inverse_norms(float* x, int64_t n, float eps) {
  using U = Vec<8>::u;
  constexpr int kNewtonSteps = 3;
  const U magic = (U{} + 0x5f3759dfu);
  const V8 half = splat8(0.5f), three_halves = splat8(1.5f), veps = splat8(eps);
  int64_t i = 0;
  auto one = [&](V8 v) {
    v += veps;
    V8 y;
    U bits;
    std::memcpy(&bits, &v, sizeof bits);
    bits = magic - (bits >> 1);
    std::memcpy(&y, &bits, sizeof y);
    const V8 hv = half * v;
    for (int k = 0; k < kNewtonSteps; ++k) y = y * (three_halves - hv * y * y);
    return y;
  };
  for (; i + 8 <= n; i += 8) vstore(x + i, one(vload<V8>(x + i)));
  if (i < n) {  // the tail through one padded vector, so every entry gets the same arithmetic
    float pad[8];
    for (int l = 0; l < 8; ++l) pad[l] = i + l < n ? x[i + l] : 1.0f;
    const V8 y = one(vload<V8>(pad));
    for (int l = 0; i + l < n; ++l) x[i + l] = y[l];
  }
}
#pragma GCC diagnostic pop
#endif

// Row z (n entries) -> softmax(z), in place.
METALEARN_INLINE void softmax_row(double* z, int64_t n) {
  double m = -std::numeric_limits<double>::infinity(), sum = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, z[i]);
  for (int64_t i = 0; i < n; ++i) sum += (z[i] = std::exp(z[i] - m));
  const double inv = 1 / sum;
  for (int64_t i = 0; i < n; ++i) z[i] *= inv;
}

METALEARN_INLINE void softmax_row(float* z, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#if METALEARN_SIMD
  using V = Vec<8>::f;
  using U = Vec<8>::u;
  int64_t i = 0;
  V vm = splat8(m);
  for (; i + 8 <= n; i += 8) {
    const V v = vload<V>(z + i);
    vm = vselect(v > vm, v, vm);
  }
  for (int l = 0; l < 8; ++l) m = std::max(m, vm[l]);
  for (; i < n; ++i) m = std::max(m, z[i]);
  V acc = vset<V>(0.0f);
  i = 0;
  for (; i + 8 <= n; i += 8) {
    const V e = vexp<V, U>(vload<V>(z + i) - splat8(m));
    vstore(z + i, e);
    acc += e;
  }
  float sum = 0;
  for (int l = 0; l < 8; ++l) sum += acc[l];
  if (i < n) {  // the tail through one padded vector, so every entry gets the same exp
    float pad[8];
    for (int l = 0; l < 8; ++l) pad[l] = i + l < n ? z[i + l] - m : 0.0f;
    const V e = vexp<V, U>(vload<V>(pad));
    for (int l = 0; i + l < n; ++l) sum += (z[i + l] = e[l]);
  }
#else
  for (int64_t i = 0; i < n; ++i) m = std::max(m, z[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (z[i] = std::exp(z[i] - m));
#endif
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) z[i] *= inv;
}

// Softmax backward of one head, and what its cosines pass on. In: w (S) the weights, g (S) dL/dw.
// Out: g = scale·dz with dz = w ⊙ (g − Σ w g) (dL/dcos, as z = scale·cos); self (S) += g ⊙ cos;
// returns Σ dz ⊙ cos = dL/dscale.
template <typename T>
METALEARN_INLINE T softmax_cos_backward(const T* w, T* g, const T* cos, T scale, int64_t S, T* self) {
  const T dot = row_dot(w, g, S);
  T gb = 0;
  for (int64_t s = 0; s < S; ++s) {
    const T dz = w[s] * (g[s] - dot);
    gb += dz * cos[s];
    g[s] = dz * scale;
    self[s] += g[s] * cos[s];
  }
  return gb;
}

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
METALEARN_INLINE float softmax_cos_backward(const float* w, float* g, const float* cos, float scale, int64_t S,
                                            float* self) {
  const float dot = row_dot(w, g, S);
  const V8 vdot = splat8(dot), vscale = splat8(scale);
  V8 acc{};
  int64_t s = 0;
  for (; s + 8 <= S; s += 8) {
    const V8 c = vload<V8>(cos + s);
    const V8 dz = vload<V8>(w + s) * (vload<V8>(g + s) - vdot);
    acc += dz * c;
    const V8 gs = dz * vscale;
    vstore(g + s, gs);
    vstore(self + s, vload<V8>(self + s) + gs * c);
  }
  float gb = lane_sum(acc);
  for (; s < S; ++s) {
    const float dz = w[s] * (g[s] - dot);
    gb += dz * cos[s];
    g[s] = dz * scale;
    self[s] += g[s] * cos[s];
  }
  return gb;
}
#pragma GCC diagnostic pop
#endif

// Cosines to weights, for one batch element whose products are done: cos (H,S) holds K·Mᵀ and minv (S)
// the slots' squared norms. Afterwards minv (S) and kinv (H) hold the inverse norms (|x|² + eps)^-1/2, cos
// the cosines and weights (H,S) = softmax_S(beta·cos).
template <typename T>
METALEARN_INLINE void cosine_weights(const T* K, const T* beta, int64_t S, int64_t H, int64_t W, T eps, T* minv,
                                     T* kinv, T* cos, T* weights) {
  inverse_norms(minv, S, eps);
  for (int64_t h = 0; h < H; ++h) {
    const T* k = K + h * W;
    kinv[h] = T(1) / std::sqrt(row_dot(k, k, W) + eps);
    T* c = cos + h * S;
    const T scale = beta ? beta[h] : T(1), ki = kinv[h];
    T* z = weights + h * S;
    for (int64_t s = 0; s < S; ++s) {
      c[s] *= ki * minv[s];
      z[s] = scale * c[s];
    }
    softmax_row(z, S);
  }
}

// One batch element: memory M (S,W), keys K (H,W), beta (H) or nullptr (1).
//   cos (H,S) = K·Mᵀ / norms; weights (H,S) = softmax_S(beta·cos); reads (H,W) = weights·M.
// minv (S) and kinv (H) receive the inverse norms (|x|² + eps)^-1/2, cos (H,S) the cosines.
template <typename T>
METALEARN_INLINE void content_read_one(const T* M, const T* K, const T* beta, int64_t S, int64_t H, int64_t W, T eps,
                                       T* weights, T* reads, T* minv, T* kinv, T* cos) {
  std::fill(cos, cos + H * S, T(0));
  rows_dot(K, H, M, S, W, cos, minv);  // the slots' norms and all heads' products in one pass over M
  cosine_weights(K, beta, S, H, W, eps, minv, kinv, cos, weights);
  std::fill(reads, reads + H * W, T(0));
  gemm_acc(weights, S, 1, H, M, W, S, W, reads, W);  // all heads in one pass over M
}

// Scratch of content_read_backward_one: (2·S + 2·H + 3·H·S + 2·H·W) entries.
inline int64_t content_read_scratch(int64_t S, int64_t H, int64_t W) { return 2 * S + 2 * H + 3 * H * S + 2 * H * W; }

// Gradients of one batch element's content read, recomputed from M, K, beta (the weights as in
// content_read_one; the reads are not needed) for upstream gW (H,S) on the weights and gR (H,W) on the reads:
//   gM (S,W) += dL/dM;  gK (H,W) = dL/dK;  gbeta (H) = dL/dbeta when beta (and gbeta) is not nullptr.
// A caller whose weights' upstream is a sum (mann_memory_step) passes the sum in gW.
template <typename T>
METALEARN_INLINE void content_read_backward_one(const T* M, const T* K, const T* beta, const T* gW, const T* gR,
                                                int64_t S, int64_t H, int64_t W, T eps, T* gM, T* gK, T* gbeta,
                                                T* scratch) {
  T* minv = scratch;     // (S)
  T* self = minv + S;    // (S) Σ_h dL/dcos·cos per slot
  T* kinv = self + S;    // (H)
  T* ks = kinv + H;      // (H) Σ_s dL/dcos·cos per head
  T* w = ks + H;         // (H,S) weights
  T* gc = w + H * S;     // (H,S) upstream of the weights, then kinv·minv·dL/dcos: [w; gc] is (2H, S)
  T* cos = gc + H * S;   // (H,S) cosines: [gc; cos] is (2H, S)
  T* rk = cos + H * S;   // (2H,W) [gR; K]
  std::copy(gR, gR + H * W, rk);
  std::copy(K, K + H * W, rk + H * W);
  std::copy(gW, gW + H * S, gc);
  std::fill(cos, cos + H * S, T(0));
  // One pass over M: the slots' norms, gc += gR·Mᵀ (reads = w·M: dL/dw) and cos = K·Mᵀ.
  rows_dot(rk, 2 * H, M, S, W, gc, minv);
  cosine_weights(K, beta, S, H, W, eps, minv, kinv, cos, w);
  std::fill(self, self + S, T(0));
  for (int64_t h = 0; h < H; ++h) {
    T* g = gc + h * S;
    const T gb = softmax_cos_backward(w + h * S, g, cos + h * S, beta ? beta[h] : T(1), S, self);
    if (gbeta) gbeta[h] = gb;
    // cos = (k·m)·kinv·minv:  dcos/dm = kinv·minv·k − cos·minv²·m,  dcos/dk = kinv·minv·m − cos·kinv²·k.
    ks[h] = row_dot(g, cos + h * S, S);
    const T ki = kinv[h];
    for (int64_t s = 0; s < S; ++s) g[s] *= ki * minv[s];
  }
  std::fill(gK, gK + H * W, T(0));
  gemm_acc(gc, S, 1, H, M, W, S, W, gK, W);
  for (int64_t h = 0; h < H; ++h) row_axpy(gK + h * W, -ks[h] * kinv[h] * kinv[h], K + h * W, W);
  // gM += wᵀ·gR + gcᵀ·K (reads = w·M, and the keys' side of the cosines): one (S, 2H)·(2H, W) product.
  gemm_acc(w, 1, S, S, rk, W, 2 * H, W, gM, W);
  for (int64_t s = 0; s < S; ++s) row_axpy(gM + s * W, -self[s] * minv[s] * minv[s], M + s * W, W);
}

}  // namespace metalearn_ext::cpu
