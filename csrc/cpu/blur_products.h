// The two products every BLUR op and gradient reduces to (specs/blur.md §3), as CPU kernels over raw
// pointers, generic in the scalar type T (float, double) and the vector width L:
//
//   pattern product  C[t,r,n] = Σ_s (M·A)[t,r,s,n mod k] · Bm[t,s,n]      n = j·k + c over N = J·k
//   channel dot      C[t,r,s,c] = Σ_j (M·X)[t,r,j,c] · Y[t,s,j,c]
//
// (M·A)[.., c] = Σ_d M[c,d] A[.., d] is the k×k state mix, folded into the prologue: it is applied once
// per (r, s) state vector while packing, never to the big operand Bm / Y. Neither product builds the
// (I+J+1)² square of the public code, and synapses (Bm in a forward, C in a Hebbian update) are read
// and written once: the Hebbian epilogue (decay, Oja, L2 normalization over r) runs on each output
// tile while it is hot, one column panel of all rows at a time, so the norm needs no extra pass over
// memory.
//
// Vectorization runs along n (contiguous in synapses and states alike). A state vector of k values is
// replicated into a pattern of Q = lcm(L, k) lanes, so the vector of columns n..n+L-1 (n a multiple of
// L) meets the lanes pattern[n mod Q ..]: any k works, k | L costs nothing extra. Everything here is
// always-inlined into the per-ISA entry points (cpu/isa_dispatch.h) of csrc/cpu/blur_products.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/simd.h"

namespace metalearn_ext::cpu::blur {

// Arguments of the pattern product for one launch. A (T,R,S,k) is read through its strides.
template <typename T>
struct PatternArgs {
  const T* A;
  int64_t a_t, a_r, a_s, a_c;
  const T* mix;  // (Tm,k,k) row-major: mixed[c] = Σ_d mix[c,d] A[d]; nullptr: identity
  int64_t mix_t; // 0 shared, k*k per copy
  const T* Bm;   // (T,S,N) contiguous
  T* C;          // (T,R,N) contiguous
  int64_t R, S, N, k;
  // Hebbian epilogue (w != nullptr): C = alpha[t,n]·w[t,r,n] + lr[t]·product; normalize: C /= ‖C[t,·,n]‖.
  const T* w;
  const T* alpha;
  int64_t alpha_t, alpha_n;
  const T* lr;
  int64_t lr_t;
  bool normalize;
  T eps;
};

// Arguments of the channel dot. X (T,R,N) and Y (T,S,N) contiguous rows, C (T,R,S,k) contiguous.
template <typename T>
struct DotArgs {
  const T* X;
  const T* mix;
  int64_t mix_t;
  const T* Y;
  T* C;
  int64_t R, S, N, k;
};

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

template <typename T, int L>
struct VecOf {
  typedef T v __attribute__((vector_size(L * sizeof(T))));
};

template <class V, typename T>
METALEARN_INLINE V vld(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, typename T>
METALEARN_INLINE void vst(T* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// Register tile: RB rows × NB vectors of L columns.
template <int L, typename T>
constexpr int kTileRows = 4;
template <int L, typename T>
constexpr int kTileVecs = (L * sizeof(T) == 64) ? 4 : 2;  // 16 accumulators of 32 AVX-512 registers, else 8 of 16

// The mixed states (M·A)[t, r, s, ·] of rows [r0, r1), every s, each replicated into its Q-lane
// pattern: dst (r1 - r0, S, Q). Computed once per unit as Q-lane vectors, from the Q × k matrix
// MQ[q, d] = M[q mod k, d] (so no lane ever needs a division): k vector FMAs per state vector.
template <typename T, int L>
METALEARN_INLINE void mix_rows(const PatternArgs<T>& p, int64_t t, int64_t r0, int64_t r1, int64_t Q, T* dst) {
  using V = typename VecOf<T, L>::v;
  const int64_t k = p.k, QV = Q / L;
  const T* mx = p.mix ? p.mix + t * p.mix_t : nullptr;
  std::vector<T> mq(k * Q);  // (d, q): the column d of MQ is contiguous
  for (int64_t d = 0; d < k; ++d)
    for (int64_t q = 0, c = 0; q < Q; ++q, c = c + 1 == k ? 0 : c + 1)
      mq[d * Q + q] = mx ? mx[c * k + d] : T(c == d);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t s = 0; s < p.S; ++s, dst += Q) {
      const T* a = p.A + t * p.a_t + r * p.a_r + s * p.a_s;
      for (int64_t v = 0; v < QV; ++v) {
        V acc = V{} + T(0);
        for (int64_t d = 0; d < k; ++d) acc += vld<V>(mq.data() + d * Q + v * L) * a[d * p.a_c];
        vst(dst + v * L, acc);
      }
    }
}

// The small-k path (K = k, a divisor of L, known at compile time): the mixed states are stored compact,
// (r1 - r0, S, K), and each state vector becomes its L-lane pattern in a register (one broadcast of K
// values) where the product needs it, so no Q-lane pattern is ever written to memory.
template <typename T, int K>
METALEARN_INLINE void mix_rows_compact(const PatternArgs<T>& p, int64_t t, int64_t r0, int64_t r1, T* dst) {
  T m[K * K];
  const T* mx = p.mix ? p.mix + t * p.mix_t : nullptr;
  for (int c = 0; c < K; ++c)
    for (int d = 0; d < K; ++d) m[c * K + d] = mx ? mx[c * K + d] : T(c == d);
  for (int64_t r = r0; r < r1; ++r) {
    const T* ar = p.A + t * p.a_t + r * p.a_r;
    if (mx == nullptr && p.a_c == 1 && p.a_s == K) {  // no mix, states already compact: a copy
      std::memcpy(dst, ar, p.S * K * sizeof(T));
      dst += p.S * K;
      continue;
    }
    for (int64_t s = 0; s < p.S; ++s, dst += K) {
      const T* a = ar + s * p.a_s;
      T x[K];
      for (int d = 0; d < K; ++d) x[d] = a[d * p.a_c];
      for (int c = 0; c < K; ++c) {
        T acc = 0;
        for (int d = 0; d < K; ++d) acc += m[c * K + d] * x[d];
        dst[c] = acc;
      }
    }
  }
}

// The L-lane pattern a[0..K-1] repeated (K | L): one broadcast of a K-value word where K values fit in
// 4 or 8 bytes, else lane by lane.
template <typename T, int L, int K>
METALEARN_INLINE typename VecOf<T, L>::v bcast_pattern(const T* a) {
  using V = typename VecOf<T, L>::v;
  static_assert(K >= 1 && L % K == 0, "K must divide L");
  constexpr int bytes = K * int(sizeof(T));
  if constexpr (K == 1) {
    return V{} + a[0];
  } else if constexpr (K == L) {
    return vld<V>(a);
  } else if constexpr (bytes == 4 || bytes == 8) {
    using W = std::conditional_t<bytes == 4, uint32_t, uint64_t>;
    typedef W VW __attribute__((vector_size(L * sizeof(T))));
    W word;
    std::memcpy(&word, a, sizeof word);
    const VW vw = VW{} + word;
    V v;
    std::memcpy(&v, &vw, sizeof v);
    return v;
  } else {
    T lanes[L];
#pragma GCC unroll 16
    for (int l = 0; l < L; ++l) lanes[l] = a[l % K];
    return vld<V>(lanes);
  }
}

// acc[rr][j] = Σ_s pattern(s, rr)[(n + j·L) mod Q ..] · b[s·bstride + j·L ..]
// (acc starts from the caller's partial sums.) K > 0: compact states (row, s, K), row_stride = S·K.
template <typename T, int L, int RB, int NB, int K = 0>
METALEARN_INLINE void pattern_tile(const T* pk, int64_t row_stride, int64_t Q, int64_t S, const T* b, int64_t bstride,
                                   int64_t n, typename VecOf<T, L>::v (&acc)[RB][NB]) {
  using V = typename VecOf<T, L>::v;
  if (K > 0 || Q == L) {  // one pattern vector per (row, s), the same for every column vector
    const int64_t width = K > 0 ? K : Q;  // values per mixed state vector
    for (int64_t s = 0; s < S; ++s) {
      V bv[NB];
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) bv[j] = vld<V>(b + s * bstride + j * L);
      const T* ps = pk + s * width;
#pragma GCC unroll 4
      for (int rr = 0; rr < RB; ++rr) {
        V pv;
        if constexpr (K > 0) pv = bcast_pattern<T, L, K>(ps + rr * row_stride);
        else pv = vld<V>(ps + rr * row_stride);
#pragma GCC unroll 4
        for (int j = 0; j < NB; ++j) acc[rr][j] += pv * bv[j];
      }
    }
  } else {
    int64_t off[NB];
    for (int j = 0; j < NB; ++j) off[j] = (n + j * L) % Q;
    for (int64_t s = 0; s < S; ++s) {
      V bv[NB];
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) bv[j] = vld<V>(b + s * bstride + j * L);
      const T* ps = pk + s * Q;
#pragma GCC unroll 4
      for (int rr = 0; rr < RB; ++rr)
#pragma GCC unroll 4
        for (int j = 0; j < NB; ++j) acc[rr][j] += vld<V>(ps + rr * row_stride + off[j]) * bv[j];
    }
  }
}

// Writes `width` (<= L) columns starting at n of one accumulator row: plain, or the Hebbian epilogue
// (which also adds the squares to colsq for the normalization).
template <typename T, int L>
METALEARN_INLINE void pattern_store(const PatternArgs<T>& p, int64_t t, int64_t r, int64_t n, int64_t width,
                                    typename VecOf<T, L>::v acc, T* colsq) {
  using V = typename VecOf<T, L>::v;
  T* c = p.C + (t * p.R + r) * p.N + n;
  if (p.w != nullptr) {
    const T* w = p.w + (t * p.R + r) * p.N + n;
    const T* alpha = p.alpha + t * p.alpha_t + n * p.alpha_n;
    const T lr = p.lr[t * p.lr_t];
    if (width == L) {
      const V av = p.alpha_n == 0 ? V{} + alpha[0] : vld<V>(alpha);  // stride 0: decay alone, no Oja term
      acc = av * vld<V>(w) + lr * acc;
      if (p.normalize) vst(colsq + n, vld<V>(colsq + n) + acc * acc);
    } else {
      T tmp[L];
      vst(tmp, acc);
      for (int64_t l = 0; l < width; ++l) {
        tmp[l] = alpha[l * p.alpha_n] * w[l] + lr * tmp[l];
        if (p.normalize) colsq[n + l] += tmp[l] * tmp[l];
      }
      acc = vld<V>(tmp);
    }
  }
  if (width == L) {
    vst(c, acc);
  } else {
    T tmp[L];
    vst(tmp, acc);
    std::memcpy(c, tmp, width * sizeof(T));
  }
}

// Partial sums of earlier blocks of s, from C (zero for the first block).
template <typename T, int L, int RB, int NB>
METALEARN_INLINE void load_partial(const PatternArgs<T>& p, int64_t t, int64_t rb, int64_t rows, int64_t n, int64_t width,
                                   bool first, typename VecOf<T, L>::v (&acc)[RB][NB]) {
  using V = typename VecOf<T, L>::v;
  for (int rr = 0; rr < RB; ++rr)
    for (int j = 0; j < NB; ++j) {
      acc[rr][j] = V{} + T(0);
      if (first || rr >= rows) continue;
      const T* c = p.C + (t * p.R + rb + rr) * p.N + n + j * L;
      if (width == L) {
        acc[rr][j] = vld<V>(c);
      } else {
        T tmp[L] = {};
        std::memcpy(tmp, c, width * sizeof(T));
        acc[rr][j] = vld<V>(tmp);
      }
    }
}

// Rows [r0, r1) × columns [n0, n1) of copy t (n0 a multiple of L). With normalize, [r0, r1) is all of R
// and each column panel is rescaled as soon as it is final, while in cache.
//
// Blocking as in a GEMM: the sum over s runs in blocks of kBlockS, so that the patterns of a row block
// (RB × kBlockS × Q) stay in L1 and the slice of Bm (kBlockS × panel) in L2 across the row blocks; C
// holds the partial sums between blocks and gets the epilogue after the last one.
constexpr int64_t kBlockS = 128;

// Fewer rows than a register tile (a batch of 1 in a forward pass), no epilogue: stream Bm row by row
// against an output row kept in L1, so that Bm, the synapses, is read once, sequentially.
template <typename T, int L, int K = 0>
METALEARN_INLINE void pattern_rows_streamed(const PatternArgs<T>& p, int64_t t, int64_t r0, int64_t r1, int64_t Q,
                                            const T* mixed) {
  using V = typename VecOf<T, L>::v;
  const int64_t S = p.S, N = p.N, k = p.k, nfull = N / L * L;
  for (int64_t r = r0; r < r1; ++r) {
    T* c = p.C + (t * p.R + r) * N;
    std::fill_n(c, N, T(0));
    for (int64_t s = 0; s < S; ++s) {
      const T* b = p.Bm + (t * S + s) * N;
      if constexpr (K > 0) {
        const T* pat = mixed + ((r - r0) * S + s) * K;
        const V pv = bcast_pattern<T, L, K>(pat);
        for (int64_t n = 0; n < nfull; n += L) vst(c + n, vld<V>(c + n) + pv * vld<V>(b + n));
        for (int64_t n = nfull; n < N; ++n) c[n] += pat[n % K] * b[n];
      } else {
        const T* pat = mixed + ((r - r0) * S + s) * Q;
        for (int64_t n = 0; n < nfull; n += L) vst(c + n, vld<V>(c + n) + vld<V>(pat + n % Q) * vld<V>(b + n));
        for (int64_t n = nfull; n < N; ++n) c[n] += pat[n % k] * b[n];
      }
    }
  }
}

// K > 0: the small-k path (k = K, K | L; compact mixed states); K = 0: any k (Q-lane patterns).
template <typename T, int L, int K = 0>
METALEARN_INLINE void pattern_unit(const PatternArgs<T>& p, int64_t t, int64_t r0, int64_t r1, int64_t n0, int64_t n1) {
  using V = typename VecOf<T, L>::v;
  constexpr int RB = kTileRows<L, T>, NB = kTileVecs<L, T>;
  const int64_t S = p.S, N = p.N, k = p.k;
  const int64_t Q = L / std::gcd<int64_t>(L, k) * k;
  const int64_t W = K > 0 ? K : Q;  // values per mixed state vector
  auto mix = [&](T* dst) {
    if constexpr (K > 0) mix_rows_compact<T, K>(p, t, r0, r1, dst);
    else mix_rows<T, L>(p, t, r0, r1, Q, dst);
  };
  if (r1 - r0 < RB && p.w == nullptr && n0 == 0 && n1 == N) {
    std::vector<T> mixed((r1 - r0) * S * W);
    mix(mixed.data());
    return pattern_rows_streamed<T, L, K>(p, t, r0, r1, Q, mixed.data());
  }
  const int64_t group = NB * L;
  const int64_t panel = std::max<int64_t>(group, (int64_t{1} << 18) / (kBlockS * int64_t(sizeof(T))) / group * group);
  // RB - 1 zero rows past r1: a row block that overhangs the unit reads zeros.
  std::vector<T> mixed((r1 - r0 + RB - 1) * S * W), btail(kBlockS * L), colsq(p.normalize ? N : 0);
  mix(mixed.data());
  PatternArgs<T> raw = p;  // partial sums: stored as they are
  raw.w = nullptr;
  for (int64_t s0 = 0; s0 < S; s0 += kBlockS) {
    const int64_t sn = std::min(kBlockS, S - s0);
    const bool first = s0 == 0, last = s0 + sn == S;
    const PatternArgs<T>& out = last ? p : raw;
    const T* bm = p.Bm + (t * S + s0) * N;
    for (int64_t c0 = n0; c0 < n1; c0 += panel) {
      const int64_t c1 = std::min(n1, c0 + panel);
      const int64_t nfull = c0 + (c1 - c0) / L * L, tail = c1 - nfull;
      if (tail) {  // the last partial vector of columns, zero-padded, so the tile never reads past a row
        for (int64_t s = 0; s < sn; ++s) std::memcpy(btail.data() + s * L, bm + s * N + nfull, tail * sizeof(T));
      }
      for (int64_t rb = r0; rb < r1; rb += RB) {
        const int64_t rows = std::min<int64_t>(RB, r1 - rb);
        const T* pk = mixed.data() + ((rb - r0) * S + s0) * W;
        int64_t n = c0;
        for (; n + group <= nfull; n += group) {
          V acc[RB][NB];
          load_partial<T, L, RB, NB>(p, t, rb, rows, n, L, first, acc);
          pattern_tile<T, L, RB, NB, K>(pk, S * W, Q, sn, bm + n, N, n, acc);
          for (int64_t rr = 0; rr < rows; ++rr)
            for (int j = 0; j < NB; ++j) pattern_store<T, L>(out, t, rb + rr, n + j * L, L, acc[rr][j], colsq.data());
        }
        if constexpr (NB > 2) {  // two vectors at a time: half the broadcasts per FMA of one at a time
          for (; n + 2 * L <= nfull; n += 2 * L) {
            V acc[RB][2];
            load_partial<T, L, RB, 2>(p, t, rb, rows, n, L, first, acc);
            pattern_tile<T, L, RB, 2, K>(pk, S * W, Q, sn, bm + n, N, n, acc);
            for (int64_t rr = 0; rr < rows; ++rr)
              for (int j = 0; j < 2; ++j) pattern_store<T, L>(out, t, rb + rr, n + j * L, L, acc[rr][j], colsq.data());
          }
        }
        for (; n < nfull; n += L) {
          V acc[RB][1];
          load_partial<T, L, RB, 1>(p, t, rb, rows, n, L, first, acc);
          pattern_tile<T, L, RB, 1, K>(pk, S * W, Q, sn, bm + n, N, n, acc);
          for (int64_t rr = 0; rr < rows; ++rr) pattern_store<T, L>(out, t, rb + rr, n, L, acc[rr][0], colsq.data());
        }
        if (tail) {
          V acc[RB][1];
          load_partial<T, L, RB, 1>(p, t, rb, rows, nfull, tail, first, acc);
          pattern_tile<T, L, RB, 1, K>(pk, S * W, Q, sn, btail.data(), L, nfull, acc);
          for (int64_t rr = 0; rr < rows; ++rr) pattern_store<T, L>(out, t, rb + rr, nfull, tail, acc[rr][0], colsq.data());
        }
      }
      if (last && p.normalize) {
        for (int64_t n = c0; n < c1; ++n) colsq[n] = T(1) / std::sqrt(colsq[n] + p.eps);
        for (int64_t r = r0; r < r1; ++r) {
          T* c = p.C + (t * p.R + r) * N;
          for (int64_t n = c0; n < c1; ++n) c[n] *= colsq[n];
        }
      }
    }
  }
}

// Rows [r0, r1) of copy t: C[t,r,s,c] for every s and c. Row blocks run in groups whose mixed rows
// (about kGroupBytes) stay in L2 while a block of Y rows streams past them once per group, rather than
// Y streaming from memory once per row block.
constexpr int64_t kGroupBytes = int64_t{1} << 19;

template <typename T, int L>
METALEARN_INLINE void dot_unit(const DotArgs<T>& p, int64_t t, int64_t r0, int64_t r1) {
  using V = typename VecOf<T, L>::v;
  constexpr int RB = 4, SB = (L * sizeof(T) == 64) ? 4 : 2;
  const int64_t S = p.S, N = p.N, k = p.k;
  const int64_t nv = (N + L - 1) / L, Np = nv * L, nfull = N / L * L, tail = N - nfull;
  // Mixed rows of X, zero-padded to Np columns and by RB - 1 rows, so row blocks may overhang.
  std::vector<T> xs((r1 - r0 + RB - 1) * Np), ytail(tail ? S * L : 0);
  const T* y = p.Y + t * S * N;
  if (tail) {
    for (int64_t s = 0; s < S; ++s) std::memcpy(ytail.data() + s * L, y + s * N + nfull, tail * sizeof(T));
  }
  const T* mx = p.mix ? p.mix + t * p.mix_t : nullptr;
  for (int64_t r = r0; r < r1; ++r) {
    const T* x = p.X + (t * p.R + r) * N;
    T* d = xs.data() + (r - r0) * Np;
    if (mx == nullptr) {
      std::memcpy(d, x, N * sizeof(T));
      continue;
    }
    for (int64_t n = 0; n < N; n += k)
      for (int64_t c = 0; c < k; ++c) {
        T acc = 0;
        for (int64_t e = 0; e < k; ++e) acc += mx[c * k + e] * x[n + e];
        d[n + c] = acc;
      }
  }
  // Lane l of the vector at column v·L holds channel (v·L + l) mod k: one channel per lane for the
  // whole row when k | L, so the lanes fold into channels once per (r, s).
  const bool fold_once = L % k == 0;
  const int64_t group = std::max<int64_t>(RB, kGroupBytes / (Np * int64_t(sizeof(T))) / RB * RB);
  for (int64_t g0 = r0; g0 < r1; g0 += group) {
    const int64_t g1 = std::min(r1, g0 + group);
    for (int64_t sb = 0; sb < S; sb += SB) {
      for (int64_t rb = g0; rb < g1; rb += RB) {
        const int64_t rows = std::min<int64_t>(RB, g1 - rb);
        const T* xb = xs.data() + (rb - r0) * Np;
        const int64_t cols = std::min<int64_t>(SB, S - sb);
        T out[RB][SB][64];
        for (int rr = 0; rr < RB; ++rr)
          for (int ss = 0; ss < SB; ++ss) std::fill_n(out[rr][ss], k, T(0));
        V acc[RB][SB];
        for (int rr = 0; rr < RB; ++rr)
          for (int ss = 0; ss < SB; ++ss) acc[rr][ss] = V{} + T(0);
        auto fold = [&](int64_t v) {
          for (int rr = 0; rr < RB; ++rr)
            for (int ss = 0; ss < SB; ++ss) {
              T lanes[L];
              vst(lanes, acc[rr][ss]);
              if (fold_once) {
                for (int l = 0; l < L; l += k)
                  for (int64_t c = 0; c < k; ++c) out[rr][ss][c] += lanes[l + c];
              } else {
                for (int l = 0; l < L; ++l) out[rr][ss][(v * L + l) % k] += lanes[l];
              }
              acc[rr][ss] = V{} + T(0);
            }
        };
        for (int64_t v = 0; v < nv; ++v) {
          V yv[SB];
          for (int ss = 0; ss < SB; ++ss) {
            const int64_t s = std::min<int64_t>(sb + ss, S - 1);  // rows past S: computed, never stored
            yv[ss] = v * L < nfull ? vld<V>(y + s * N + v * L) : vld<V>(ytail.data() + s * L);
          }
#pragma GCC unroll 4
          for (int rr = 0; rr < RB; ++rr) {
            const V xv = vld<V>(xb + rr * Np + v * L);
#pragma GCC unroll 4
            for (int ss = 0; ss < SB; ++ss) acc[rr][ss] += xv * yv[ss];
          }
          if (!fold_once) fold(v);
        }
        if (fold_once) fold(0);
        for (int64_t rr = 0; rr < rows; ++rr)
          for (int64_t ss = 0; ss < cols; ++ss) {
            T* c = p.C + ((t * p.R + rb + rr) * S + sb + ss) * k;
            std::memcpy(c, out[rr][ss], k * sizeof(T));
          }
      }
    }
  }
}

// The channel dot for short rows (small N = J·k), vectorized along s instead of n, so that no lanes need
// folding into channels: C[t,r,s,c] = Σ_j (M·X)[t,r,j,c] · yt[(j·k + c)·Sp + s], with yt (N, Sp) the
// transposed Y of copy t, zero-padded to Sp (a multiple of L) columns.
template <typename T, int L, int SV>
METALEARN_INLINE void dot_by_s_tile(const DotArgs<T>& p, int64_t t, int64_t rb, int64_t rows, int64_t c, int64_t s0,
                                    const T* xs, const T* yt, int64_t Sp) {
  using V = typename VecOf<T, L>::v;
  constexpr int RB = 4;
  const int64_t N = p.N, k = p.k;
  V acc[RB][SV];
  for (int rr = 0; rr < RB; ++rr)
    for (int v = 0; v < SV; ++v) acc[rr][v] = V{} + T(0);
  for (int64_t n = c; n < N; n += k) {
    V yv[SV];
#pragma GCC unroll 4
    for (int v = 0; v < SV; ++v) yv[v] = vld<V>(yt + n * Sp + s0 + v * L);
#pragma GCC unroll 4
    for (int rr = 0; rr < RB; ++rr) {
      const T x = xs[rr * N + n];
#pragma GCC unroll 4
      for (int v = 0; v < SV; ++v) acc[rr][v] += x * yv[v];
    }
  }
  for (int64_t rr = 0; rr < rows; ++rr)
    for (int v = 0; v < SV; ++v) {
      T lanes[L];
      vst(lanes, acc[rr][v]);
      T* out = p.C + ((t * p.R + rb + rr) * p.S + s0 + v * L) * k + c;
      const int64_t n_s = std::min<int64_t>(L, p.S - (s0 + v * L));
      for (int64_t l = 0; l < n_s; ++l) out[l * k] = lanes[l];
    }
}

template <typename T, int L>
METALEARN_INLINE void dot_by_s_unit(const DotArgs<T>& p, int64_t t, int64_t r0, int64_t r1, const T* yt, int64_t Sp) {
  constexpr int RB = 4, SV = (L * sizeof(T) == 64) ? 4 : 2;
  const int64_t N = p.N, k = p.k;
  std::vector<T> xs(RB * N);
  const T* mx = p.mix ? p.mix + t * p.mix_t : nullptr;
  for (int64_t rb = r0; rb < r1; rb += RB) {
    const int64_t rows = std::min<int64_t>(RB, r1 - rb);
    std::fill(xs.begin(), xs.end(), T(0));
    for (int64_t rr = 0; rr < rows; ++rr) {
      const T* x = p.X + (t * p.R + rb + rr) * N;
      T* d = xs.data() + rr * N;
      if (mx == nullptr) {
        std::memcpy(d, x, N * sizeof(T));
        continue;
      }
      for (int64_t n = 0; n < N; n += k)
        for (int64_t c = 0; c < k; ++c) {
          T acc = 0;
          for (int64_t e = 0; e < k; ++e) acc += mx[c * k + e] * x[n + e];
          d[n + c] = acc;
        }
    }
    for (int64_t c = 0; c < k; ++c) {
      int64_t s0 = 0;
      for (; s0 + SV * L <= Sp; s0 += SV * L) dot_by_s_tile<T, L, SV>(p, t, rb, rows, c, s0, xs.data(), yt, Sp);
      for (; s0 < Sp; s0 += L) dot_by_s_tile<T, L, 1>(p, t, rb, rows, c, s0, xs.data(), yt, Sp);
    }
  }
}

#pragma GCC diagnostic pop
#endif  // METALEARN_SIMD

}  // namespace metalearn_ext::cpu::blur
