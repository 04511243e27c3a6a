// CPU kernels of metalearn_ext::vsml_step (specs/vsml.md §1): the per-synapse cores behind
// VsmlForwardKernel / VsmlBackwardKernel (csrc/vsml_step.h).
//
// Work is split into one contiguous range of rows (t, a) per thread; a row holds B contiguous synapses.
// bwd_mean[t,a] and g_row[t,a] are row-local. fwd_mean[t], g_col[t] and g_wh[t] are written directly
// when one thread owns every row of copy t, and through a per-thread partial slot otherwise (only the
// first and last copy of a range can be shared), reduced serially afterwards: deterministic, no atomics.
// The backward recomputes the ticks per synapse, keeping only that synapse's per-tick states.
//
// float with N in {4, 8, 12, 16, 24, 32} takes a fast path: GCC/Clang vector extensions over the 4N gate outputs,
// 2-4 synapses in lockstep, a Cephes-style exp for sigmoid and a rational tanh (errors ~1e-7), and on
// x86-64 with GCC runtime-dispatched AVX-512 / AVX2+FMA builds (the op-agnostic parts: cpu/simd.h,
// cpu/isa_dispatch.h). Everything else (double, other N, other compilers) takes a scalar path with
// std::exp / std::tanh, exact enough for gradcheck.
// Needs -fopenmp (compile and link) for at::parallel_for to run in parallel; correct without it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vsml_step.h"
#include "cpu/isa_dispatch.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"

namespace {

using namespace metalearn_ext::cpu;

// ---------------------------------------------------------------------------------------------
// Arguments and work split
// ---------------------------------------------------------------------------------------------

template <typename T>
struct FwdArgs {
  const T *h, *c, *row, *col, *w_t;  // w_t: (Tw, N, 4N), W_h transposed
  T *h_out, *c_out, *fwd_mean, *bwd_mean;
  int64_t T_, A, B, N, K, Tw, nchunks;
  T* slots;         // (nchunks, 2, B, N) partial sums of h_out over a
  int64_t* slot_t;  // (nchunks, 2): copy index of each used slot, -1 if unused
};

template <typename T>
struct BwdArgs {
  const T *gh, *gc, *gfm, *gbm, *h, *c, *row, *col, *w, *w_t;  // w: (Tw, 4N, N), w_t: (Tw, N, 4N)
  T *gh0, *gc0, *g_row, *g_col, *g_wh;
  int64_t T_, A, B, N, K, Tw, nchunks;
  T* slots;  // (nchunks, 2, B*4N + 4N*N) partial g_col, g_wh
  int64_t* slot_t;
};

// ---------------------------------------------------------------------------------------------
// Scalar path (any N, float or double): exact libm activations
// ---------------------------------------------------------------------------------------------

template <typename T>
void fwd_row_scalar(const FwdArgs<T>& p, int64_t t, int64_t a, T* facc, T* scratch) {
  const int64_t N = p.N, G = 4 * N, B = p.B;
  const T* w_t = p.w_t + (p.Tw == 1 ? 0 : t) * N * G;
  const T* rowp = p.row + (t * p.A + a) * G;
  const T* colp = p.col + t * B * G;
  const int64_t s0 = (t * p.A + a) * B * N;
  T* hv = scratch;
  T* cv = hv + N;
  T* z = cv + N;
  T* bsum = z + G;
  for (int64_t n = 0; n < N; ++n) bsum[n] = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t s = s0 + b * N;
    for (int64_t n = 0; n < N; ++n) {
      hv[n] = p.h[s + n];
      cv[n] = p.c[s + n];
    }
    for (int64_t k = 0; k < p.K; ++k) {
      for (int64_t j = 0; j < G; ++j) z[j] = rowp[j] + colp[b * G + j];
      for (int64_t n = 0; n < N; ++n) {
        const T hn = hv[n];
        const T* wr = w_t + n * G;
        for (int64_t j = 0; j < G; ++j) z[j] += wr[j] * hn;
      }
      for (int64_t n = 0; n < N; ++n) {
        const T i = sigmoid_exact(z[n]), f = sigmoid_exact(z[N + n]), g = std::tanh(z[2 * N + n]),
                o = sigmoid_exact(z[3 * N + n]);
        cv[n] = f * cv[n] + i * g;
        hv[n] = o * std::tanh(cv[n]);
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      p.h_out[s + n] = hv[n];
      p.c_out[s + n] = cv[n];
      bsum[n] += hv[n];
      facc[b * N + n] += hv[n];
    }
  }
  const T invB = T(1) / T(B);
  for (int64_t n = 0; n < N; ++n) p.bwd_mean[(t * p.A + a) * N + n] = bsum[n] * invB;
}

template <typename T>
void bwd_row_scalar(const BwdArgs<T>& p, int64_t t, int64_t a, T* gcol, T* gwh, T* scratch) {
  const int64_t N = p.N, G = 4 * N, B = p.B, K = p.K;
  const int64_t tw = p.Tw == 1 ? 0 : t;
  const T* w = p.w + tw * G * N;
  const T* w_t = p.w_t + tw * N * G;
  const T* rowp = p.row + (t * p.A + a) * G;
  const T* colp = p.col + t * B * G;
  T* grow = p.g_row + (t * p.A + a) * G;
  const int64_t s0 = (t * p.A + a) * B * N;
  const T invA = T(1) / T(p.A), invB = T(1) / T(B);
  // Per-tick states of this synapse only: h_{k-1}, c_{k-1}, activations, tanh(c_k).
  T* HP = scratch;
  T* CP = HP + K * N;
  T* ACT = CP + K * N;
  T* TC = ACT + K * G;
  T* hv = TC + K * N;
  T* cv = hv + N;
  T* z = cv + N;
  T* dh = z + G;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t s = s0 + b * N;
    for (int64_t n = 0; n < N; ++n) {
      hv[n] = p.h[s + n];
      cv[n] = p.c[s + n];
    }
    for (int64_t k = 0; k < K; ++k) {
      T* act = ACT + k * G;
      for (int64_t n = 0; n < N; ++n) {
        HP[k * N + n] = hv[n];
        CP[k * N + n] = cv[n];
      }
      for (int64_t j = 0; j < G; ++j) z[j] = rowp[j] + colp[b * G + j];
      for (int64_t n = 0; n < N; ++n) {
        const T hn = hv[n];
        const T* wr = w_t + n * G;
        for (int64_t j = 0; j < G; ++j) z[j] += wr[j] * hn;
      }
      for (int64_t n = 0; n < N; ++n) {
        act[n] = sigmoid_exact(z[n]);
        act[N + n] = sigmoid_exact(z[N + n]);
        act[2 * N + n] = std::tanh(z[2 * N + n]);
        act[3 * N + n] = sigmoid_exact(z[3 * N + n]);
        cv[n] = act[N + n] * cv[n] + act[n] * act[2 * N + n];
        TC[k * N + n] = std::tanh(cv[n]);
        hv[n] = act[3 * N + n] * TC[k * N + n];
      }
    }
    T* dc = cv;  // reuse: the final c is not needed any more
    for (int64_t n = 0; n < N; ++n) {
      dh[n] = p.gh[s + n] + p.gfm[(t * B + b) * N + n] * invA + p.gbm[(t * p.A + a) * N + n] * invB;
      dc[n] = p.gc[s + n];
    }
    T* dz = z;
    for (int64_t k = K - 1; k >= 0; --k) {
      const T* act = ACT + k * G;
      for (int64_t n = 0; n < N; ++n) {
        const T i = act[n], f = act[N + n], g = act[2 * N + n], o = act[3 * N + n], tc = TC[k * N + n];
        const T d_o = dh[n] * tc;
        const T dcn = dc[n] + dh[n] * o * (T(1) - tc * tc);
        dz[n] = dcn * g * i * (T(1) - i);
        dz[N + n] = dcn * CP[k * N + n] * f * (T(1) - f);
        dz[2 * N + n] = dcn * i * (T(1) - g * g);
        dz[3 * N + n] = d_o * o * (T(1) - o);
        dc[n] = dcn * f;
      }
      const T* hp = HP + k * N;
      for (int64_t j = 0; j < G; ++j) {
        grow[j] += dz[j];
        gcol[b * G + j] += dz[j];
        T* gw = gwh + j * N;
        for (int64_t n = 0; n < N; ++n) gw[n] += dz[j] * hp[n];
      }
      for (int64_t n = 0; n < N; ++n) dh[n] = 0;
      for (int64_t j = 0; j < G; ++j) {
        const T* wr = w + j * N;
        for (int64_t n = 0; n < N; ++n) dh[n] += wr[n] * dz[j];
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      p.gh0[s + n] = dh[n];
      p.gc0[s + n] = dc[n];
    }
  }
}

inline int64_t bwd_scalar_scratch(int64_t N, int64_t K) { return K * 7 * N + 8 * N; }

// ---------------------------------------------------------------------------------------------
// Fast float path: 8-lane vectors over the gate outputs, compile-time N
// ---------------------------------------------------------------------------------------------

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

// The fast path runs S = 2 synapses in lockstep: one synapse-tick is a long chain of dependent
// latency-bound steps (matvec, exp polynomials, divisions, tanh of the new cell), and a second
// independent chain roughly doubles the work in flight. Every W_h load then feeds two FMAs.
// 4 synapses run in lockstep where AVX-512's 32 registers hold them.
template <int L>
constexpr int kGroup = L == 16 ? 4 : 2;

// z[s] = base[s] + W_h h[s] for S synapses, with w_t = W_h^T (N, 4N) row-major, hs = h as scalars.
template <int N, int L, int S>
METALEARN_INLINE void gate_matvec(typename Vec<L>::f (*z)[4 * N / L], const typename Vec<L>::f (*base)[4 * N / L],
                             const float* w_t, const float (*hs)[N]) {
  using V = typename Vec<L>::f;
  constexpr int G = 4 * N, GV = G / L, R = kAccumulators<L>;
  constexpr int JB = largest_divisor_at_most(GV, R / S);                       // output vectors per pass
  constexpr int P = largest_divisor_at_most(N, R / (S * JB) > 1 ? R / (S * JB) : 1);  // partial sums
  static_assert(N % P == 0 && GV % JB == 0, "unsupported N");
#pragma GCC unroll 8
  for (int jb = 0; jb < GV; jb += JB) {
    V acc[S][P][JB];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 16
      for (int jj = 0; jj < JB; ++jj) {
        acc[s][0][jj] = base[s][jb + jj];
#pragma GCC unroll 16
        for (int pp = 1; pp < P; ++pp) acc[s][pp][jj] = vset<V>(0.0f);
      }
#pragma GCC unroll 32
    for (int n = 0; n < N; n += P) {
#pragma GCC unroll 16
      for (int pp = 0; pp < P; ++pp) {
        const float* wr = w_t + (n + pp) * G + jb * L;
        V hb[S];
#pragma GCC unroll 4
        for (int s = 0; s < S; ++s) hb[s] = vset<V>(hs[s][n + pp]);
#pragma GCC unroll 16
        for (int jj = 0; jj < JB; ++jj) {
          const V wv = vload<V>(wr + jj * L);
#pragma GCC unroll 4
          for (int s = 0; s < S; ++s) acc[s][pp][jj] += wv * hb[s];
        }
      }
    }
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 16
      for (int jj = 0; jj < JB; ++jj) {
        V sum = acc[s][0][jj];
#pragma GCC unroll 16
        for (int pp = 1; pp < P; ++pp) sum += acc[s][pp][jj];
        z[s][jb + jj] = sum;
      }
  }
}

// dh[s] = W_h^T dz[s] for S synapses, with w = W_h (4N, N) row-major.
template <int N, int L, int S>
METALEARN_INLINE void state_matvec_t(typename Vec<L>::f (*dh)[N / L], const float* w, const float* const* dz) {
  using V = typename Vec<L>::f;
  constexpr int G = 4 * N, NV = N / L, R = kAccumulators<L>;
  constexpr int P0 = R / (S * NV) > 1 ? R / (S * NV) : 1;
  // keep the dependent chains <= 64 FMAs (N = 32)
  constexpr int P = largest_divisor_at_most(G, P0 * 64 >= G ? P0 : 2 * P0);
  static_assert(G % P == 0, "unsupported N");
  V acc[S][P][NV];
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 16
    for (int pp = 0; pp < P; ++pp)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[s][pp][v] = vset<V>(0.0f);
#pragma GCC unroll 16
  for (int j = 0; j < G; j += P) {
#pragma GCC unroll 16
    for (int pp = 0; pp < P; ++pp) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const V wv = vload<V>(w + (j + pp) * N + v * L);
#pragma GCC unroll 4
        for (int s = 0; s < S; ++s) acc[s][pp][v] += wv * vset<V>(dz[s][j + pp]);
      }
    }
  }
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      V sum = acc[s][0][v];
#pragma GCC unroll 16
      for (int pp = 1; pp < P; ++pp) sum += acc[s][pp][v];
      dh[s][v] = sum;
    }
}

// One LSTM tick of S synapses; with kKeep, stores activations (i, f, g, o) at act + s*act_stride
// and tanh(c') at tc + s*tc_stride.
template <int N, int L, int S, bool kKeep>
METALEARN_INLINE void lstm_tick(typename Vec<L>::f (*hv)[N / L], typename Vec<L>::f (*cv)[N / L],
                           const typename Vec<L>::f (*base)[4 * N / L], const float* w_t, float* act,
                           int64_t act_stride, float* tc, int64_t tc_stride) {
  using V = typename Vec<L>::f;
  using U = typename Vec<L>::u;
  constexpr int NV = N / L, GV = 4 * N / L;
  float hs[S][N];
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(hs[s] + v * L, hv[s][v]);
  V z[S][GV];
  gate_matvec<N, L, S>(z, base, w_t, hs);
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const V i = vsigmoid<V, U>(z[s][v]), f = vsigmoid<V, U>(z[s][NV + v]), g = vtanh(z[s][2 * NV + v]),
              o = vsigmoid<V, U>(z[s][3 * NV + v]);
      cv[s][v] = f * cv[s][v] + i * g;
      const V t = vtanh(cv[s][v]);
      hv[s][v] = o * t;
      if (kKeep) {
        float* a = act + s * act_stride;
        vstore(a + v * L, i);
        vstore(a + N + v * L, f);
        vstore(a + 2 * N + v * L, g);
        vstore(a + 3 * N + v * L, o);
        vstore(tc + s * tc_stride + v * L, t);
      }
    }
}

// Synapses b0 .. b0+S-1 of row (t, a) through all ticks; adds h' to facc[b] and bsum.
template <int N, int L, int S>
METALEARN_INLINE void fwd_synapses_fast(const FwdArgs<float>& p, const float* w_t, const typename Vec<L>::f* rowv,
                                   const float* colp, int64_t s0, int64_t b0, float* facc,
                                   typename Vec<L>::f* bsum) {
  using V = typename Vec<L>::f;
  constexpr int G = 4 * N, NV = N / L, GV = G / L;
  V hv[S][NV], cv[S][NV], base[S][GV];
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + s) * N;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      hv[s][v] = vload<V>(p.h + o + v * L);
      cv[s][v] = vload<V>(p.c + o + v * L);
    }
#pragma GCC unroll 16
    for (int v = 0; v < GV; ++v) base[s][v] = rowv[v] + vload<V>(colp + (b0 + s) * G + v * L);
  }
  for (int64_t k = 0; k < p.K; ++k) lstm_tick<N, L, S, false>(hv, cv, base, w_t, nullptr, 0, nullptr, 0);
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + s) * N;
    float* fa = facc + (b0 + s) * N;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      vstore(p.h_out + o + v * L, hv[s][v]);
      vstore(p.c_out + o + v * L, cv[s][v]);
      bsum[v] += hv[s][v];
      vstore(fa + v * L, vload<V>(fa + v * L) + hv[s][v]);
    }
  }
}

template <int N, int L>
METALEARN_INLINE void fwd_row_fast(const FwdArgs<float>& p, int64_t t, int64_t a, float* facc) {
  using V = typename Vec<L>::f;
  constexpr int G = 4 * N, NV = N / L, GV = G / L;
  const int64_t B = p.B;
  const float* w_t = p.w_t + (p.Tw == 1 ? 0 : t) * int64_t{N} * G;
  const float* rowp = p.row + (t * p.A + a) * G;
  const float* colp = p.col + t * B * G;
  const int64_t s0 = (t * p.A + a) * B * N;
  V rowv[GV], bsum[NV];
  for (int v = 0; v < GV; ++v) rowv[v] = vload<V>(rowp + v * L);
  for (int v = 0; v < NV; ++v) bsum[v] = vset<V>(0.0f);
  int64_t b = 0;
  if constexpr (kGroup<L> == 4)
    for (; b + 4 <= B; b += 4) fwd_synapses_fast<N, L, 4>(p, w_t, rowv, colp, s0, b, facc, bsum);
  for (; b + 2 <= B; b += 2) fwd_synapses_fast<N, L, 2>(p, w_t, rowv, colp, s0, b, facc, bsum);
  if (b < B) fwd_synapses_fast<N, L, 1>(p, w_t, rowv, colp, s0, b, facc, bsum);
  const float invB = 1.0f / float(B);
  for (int v = 0; v < NV; ++v) vstore(p.bwd_mean + (t * p.A + a) * N + v * L, bsum[v] * invB);
}

// Synapses per block of the backward (a multiple of 4, for the groups): dz and h_{k-1} of a block are buffered
// so that g_wh is updated by one small register-blocked GEMM per block instead of a rank-1 update per
// synapse-tick.
inline int64_t bwd_block(int64_t K) { return std::max<int64_t>(4, 64 / K / 4 * 4); }
inline int64_t bwd_fast_scratch(int64_t N, int64_t K) {
  const int64_t G = 4 * N, S = bwd_block(K) * K;
  return 4 * K * (G + 2 * N) + S * (G + N) + G;
}

// gwh_t (N, 4N) += HP^T DZ over S synapse-ticks; DZ (S, 4N), HP (S, N). Transposed so that each
// broadcast of h feeds 4N/L FMAs (the (4N, N) orientation needs one broadcast per FMA).
template <int N, int L>
METALEARN_INLINE void gwh_update(float* gwh_t, const float* DZ, const float* HP, int64_t S) {
  using V = typename Vec<L>::f;
  constexpr int G = 4 * N, GV = G / L, JV = largest_divisor_at_most(GV, kAccumulators<L>);  // per pass
  constexpr int NB = largest_divisor_at_most(N, kAccumulators<L> / JV);
  static_assert(N % NB == 0 && GV % JV == 0, "unsupported N");
  for (int n0 = 0; n0 < N; n0 += NB) {
    for (int j0 = 0; j0 < GV; j0 += JV) {
      V acc[NB][JV];
#pragma GCC unroll 16
      for (int nn = 0; nn < NB; ++nn)
#pragma GCC unroll 16
        for (int v = 0; v < JV; ++v) acc[nn][v] = vload<V>(gwh_t + (n0 + nn) * G + (j0 + v) * L);
      for (int64_t s = 0; s < S; ++s) {
        V dz[JV];
#pragma GCC unroll 16
        for (int v = 0; v < JV; ++v) dz[v] = vload<V>(DZ + s * G + (j0 + v) * L);
#pragma GCC unroll 16
        for (int nn = 0; nn < NB; ++nn) {
          const V hb = vset<V>(HP[s * N + n0 + nn]);
#pragma GCC unroll 16
          for (int v = 0; v < JV; ++v) acc[nn][v] += hb * dz[v];
        }
      }
#pragma GCC unroll 16
      for (int nn = 0; nn < NB; ++nn)
#pragma GCC unroll 16
        for (int v = 0; v < JV; ++v) vstore(gwh_t + (n0 + nn) * G + (j0 + v) * L, acc[nn][v]);
    }
  }
}

// Backward of synapses b0+ib .. b0+ib+S-1 (block-local index ib) of row (t, a): recompute the ticks
// keeping this synapse's states in scratch, then walk them back. dz and h_{k-1} go to the block buffers.
template <int N, int L, int S>
METALEARN_INLINE void bwd_synapses_fast(const BwdArgs<float>& p, int64_t t, int64_t a, const float* w, const float* w_t,
                                   const typename Vec<L>::f* rowv, const typename Vec<L>::f* gbm_v, int64_t b0,
                                   int64_t ib, float* scratch, float* DZ, float* HP) {
  using V = typename Vec<L>::f;
  constexpr int G = 4 * N, NV = N / L, GV = G / L;
  const int64_t B = p.B, K = p.K;
  const float* colp = p.col + t * B * G;
  const int64_t s0 = (t * p.A + a) * B * N;
  const float invA = 1.0f / float(p.A);
  // Per synapse s of the group: ACT (K, 4N) activations, TC (K, N) tanh(c_k), CP (K, N) c_{k-1}.
  const int64_t stride = K * (G + 2 * N);
  float* ACT = scratch;
  float* TC = ACT + K * G;
  float* CP = TC + K * N;
  V hv[S][NV], cv[S][NV], base[S][GV];
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + ib + s) * N;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      hv[s][v] = vload<V>(p.h + o + v * L);
      cv[s][v] = vload<V>(p.c + o + v * L);
    }
#pragma GCC unroll 16
    for (int v = 0; v < GV; ++v) base[s][v] = rowv[v] + vload<V>(colp + (b0 + ib + s) * G + v * L);
  }
  for (int64_t k = 0; k < K; ++k) {
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        vstore(HP + ((ib + s) * K + k) * N + v * L, hv[s][v]);
        vstore(CP + s * stride + k * N + v * L, cv[s][v]);
      }
    lstm_tick<N, L, S, true>(hv, cv, base, w_t, ACT + k * G, stride, TC + k * N, stride);
  }
  V dh[S][NV], dc[S][NV];
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s) {
    const int64_t b = b0 + ib + s, o = s0 + b * N;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      dh[s][v] = vload<V>(p.gh + o + v * L) + vload<V>(p.gfm + (t * B + b) * N + v * L) * invA + gbm_v[v];
      dc[s][v] = vload<V>(p.gc + o + v * L);
    }
  }
  for (int64_t k = K - 1; k >= 0; --k) {
    const float* dzs[S];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      const float* act = ACT + s * stride + k * G;
      const float* tcp = TC + s * stride + k * N;
      const float* cpp = CP + s * stride + k * N;
      float* dz = DZ + ((ib + s) * K + k) * G;
      dzs[s] = dz;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const V i = vload<V>(act + v * L), f = vload<V>(act + N + v * L), g = vload<V>(act + 2 * N + v * L),
                o = vload<V>(act + 3 * N + v * L), tc = vload<V>(tcp + v * L);
        const V d_o = dh[s][v] * tc;
        const V dcn = dc[s][v] + dh[s][v] * o * (1.0f - tc * tc);
        vstore(dz + v * L, dcn * g * i * (1.0f - i));
        vstore(dz + N + v * L, dcn * vload<V>(cpp + v * L) * f * (1.0f - f));
        vstore(dz + 2 * N + v * L, dcn * i * (1.0f - g * g));
        vstore(dz + 3 * N + v * L, d_o * o * (1.0f - o));
        dc[s][v] = dcn * f;
      }
    }
    state_matvec_t<N, L, S>(dh, w, dzs);
  }
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + ib + s) * N;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      vstore(p.gh0 + o + v * L, dh[s][v]);
      vstore(p.gc0 + o + v * L, dc[s][v]);
    }
  }
}

template <int N, int L>
METALEARN_INLINE void bwd_row_fast(const BwdArgs<float>& p, int64_t t, int64_t a, float* gcol, float* gwh_t,
                              float* scratch) {
  using V = typename Vec<L>::f;
  constexpr int G = 4 * N, NV = N / L, GV = G / L;
  const int64_t B = p.B, K = p.K, SB = bwd_block(K);
  const int64_t tw = p.Tw == 1 ? 0 : t;
  const float* w = p.w + tw * int64_t{G} * N;
  const float* w_t = p.w_t + tw * int64_t{N} * G;
  const float* rowp = p.row + (t * p.A + a) * G;
  const float invB = 1.0f / float(B);
  float* DZ = scratch + 4 * K * (G + 2 * N);  // (SB*K, 4N) gate gradients of the block
  float* HP = DZ + SB * K * G;                // (SB*K, N) h_{k-1} of the block
  float* grow = HP + SB * K * N;              // (4N) row sum of dz
  V rowv[GV], gbm_v[NV];
  for (int v = 0; v < GV; ++v) rowv[v] = vload<V>(rowp + v * L);
  for (int v = 0; v < NV; ++v) gbm_v[v] = vload<V>(p.gbm + (t * p.A + a) * N + v * L) * invB;
  for (int j = 0; j < G; ++j) grow[j] = 0.0f;

  for (int64_t b0 = 0; b0 < B; b0 += SB) {
    const int64_t nb = std::min(SB, B - b0);
    int64_t ib = 0;
    if constexpr (kGroup<L> == 4)
      for (; ib + 4 <= nb; ib += 4) bwd_synapses_fast<N, L, 4>(p, t, a, w, w_t, rowv, gbm_v, b0, ib, scratch, DZ, HP);
    for (; ib + 2 <= nb; ib += 2) bwd_synapses_fast<N, L, 2>(p, t, a, w, w_t, rowv, gbm_v, b0, ib, scratch, DZ, HP);
    if (ib < nb) bwd_synapses_fast<N, L, 1>(p, t, a, w, w_t, rowv, gbm_v, b0, ib, scratch, DZ, HP);
    // Block epilogue: g_col[b] += sum_k dz, g_row += sum_{b,k} dz, g_wh^T += HP^T DZ.
    for (ib = 0; ib < nb; ++ib) {
      float* gc = gcol + (b0 + ib) * G;
      V acc[GV];
#pragma GCC unroll 16
      for (int v = 0; v < GV; ++v) acc[v] = vload<V>(DZ + ib * K * G + v * L);
      for (int64_t k = 1; k < K; ++k) {
#pragma GCC unroll 16
        for (int v = 0; v < GV; ++v) acc[v] += vload<V>(DZ + (ib * K + k) * G + v * L);
      }
#pragma GCC unroll 16
      for (int v = 0; v < GV; ++v) {
        vstore(grow + v * L, vload<V>(grow + v * L) + acc[v]);
        vstore(gc + v * L, vload<V>(gc + v * L) + acc[v]);
      }
    }
    gwh_update<N, L>(gwh_t, DZ, HP, nb * K);
  }
  float* gr = p.g_row + (t * p.A + a) * G;
  for (int j = 0; j < G; ++j) gr[j] += grow[j];
}

#pragma GCC diagnostic pop
#endif  // METALEARN_SIMD


// ---------------------------------------------------------------------------------------------
// Chunk drivers: one contiguous range of rows, shared outputs per copy t (see the file comment)
// ---------------------------------------------------------------------------------------------

template <typename T, int NC, int L>
METALEARN_INLINE void fwd_chunk(const FwdArgs<T>& p, int64_t chunk) {
  const int64_t N = p.N, B = p.B;
  int64_t r0, r1;
  chunk_rows(p.T_ * p.A, p.nchunks, chunk, r0, r1);
  std::vector<T> scratch(NC == 0 ? 2 * N + 4 * N + N : 0);
  const T invA = T(1) / T(p.A);
  // Rows grouped by copy t. A chunk that owns every row of t writes fwd_mean[t] directly; only the
  // first and the last copy of a range can be shared with another chunk (no lambda here: the clones
  // must inline the whole hot loop).
  for (int64_t r = r0, slot = 0; r < r1; slot = 1) {
    const int64_t t = r / p.A, a0 = r % p.A, a1 = std::min<int64_t>(p.A, a0 + (r1 - r));
    const bool owned = a0 == 0 && a1 == p.A;
    r += a1 - a0;
    T* facc;
    if (owned) {
      facc = p.fwd_mean + t * B * N;
    } else {
      facc = p.slots + (chunk * 2 + slot) * B * N;
      p.slot_t[chunk * 2 + slot] = t;
    }
    std::fill(facc, facc + B * N, T(0));
    for (int64_t a = a0; a < a1; ++a) {
#if METALEARN_SIMD
      if constexpr (NC != 0) {
        fwd_row_fast<NC, L>(p, t, a, facc);
        continue;
      }
#endif
      fwd_row_scalar<T>(p, t, a, facc, scratch.data());
    }
    if (owned)
      for (int64_t i = 0; i < B * N; ++i) facc[i] *= invA;
  }
}

template <typename T, int NC, int L>
METALEARN_INLINE void bwd_chunk(const BwdArgs<T>& p, int64_t chunk) {
  const int64_t N = p.N, G = 4 * N, B = p.B;
  int64_t r0, r1;
  chunk_rows(p.T_ * p.A, p.nchunks, chunk, r0, r1);
#if METALEARN_SIMD
  std::vector<T> scratch(NC != 0 ? bwd_fast_scratch(N, p.K) : bwd_scalar_scratch(N, p.K));
#else
  std::vector<T> scratch(bwd_scalar_scratch(N, p.K));
#endif
  std::vector<T> gwh_t(NC != 0 ? N * G : 0);  // the fast path accumulates g_wh[t] transposed
  const int64_t slot_size = B * G + G * N;
  for (int64_t r = r0, slot = 0; r < r1; slot = 1) {  // as in fwd_chunk
    const int64_t t = r / p.A, a0 = r % p.A, a1 = std::min<int64_t>(p.A, a0 + (r1 - r));
    const bool owned = a0 == 0 && a1 == p.A;
    r += a1 - a0;
    T *gcol, *gwh;
    if (owned) {  // zero on entry, owned by this chunk
      gcol = p.g_col + t * B * G;
      gwh = p.g_wh + t * G * N;
    } else {
      gcol = p.slots + (chunk * 2 + slot) * slot_size;
      gwh = gcol + B * G;
      std::fill(gcol, gcol + slot_size, T(0));
      p.slot_t[chunk * 2 + slot] = t;
    }
#if METALEARN_SIMD
    if constexpr (NC != 0) {
      std::fill(gwh_t.begin(), gwh_t.end(), T(0));
      for (int64_t a = a0; a < a1; ++a) bwd_row_fast<NC, L>(p, t, a, gcol, gwh_t.data(), scratch.data());
      for (int64_t j = 0; j < G; ++j)
        for (int64_t n = 0; n < N; ++n) gwh[j * N + n] += gwh_t[n * G + j];
      continue;
    }
#endif
    for (int64_t a = a0; a < a1; ++a) bwd_row_scalar<T>(p, t, a, gcol, gwh, scratch.data());
  }
}

// Entry points: each inlines the whole chunk loop for one (N, lane count, ISA).
using FwdChunkFn = void (*)(const FwdArgs<float>&, int64_t);
using BwdChunkFn = void (*)(const BwdArgs<float>&, int64_t);
struct ChunkFns {
  FwdChunkFn fwd;
  BwdChunkFn bwd;
};

#define VSML_ENTRY(attr, name, N, L)                                                                      \
  attr void fwd_##name(const FwdArgs<float>& p, int64_t c) { fwd_chunk<float, N, L>(p, c); }            \
  attr void bwd_##name(const BwdArgs<float>& p, int64_t c) { bwd_chunk<float, N, L>(p, c); }

VSML_ENTRY(, f32_any, 0, 4)
#if METALEARN_SIMD
VSML_ENTRY(, f32_n4_base, 4, 4)
VSML_ENTRY(, f32_n12_base, 12, 4)
VSML_ENTRY(, f32_n24_base, 24, 4)
VSML_ENTRY(, f32_n8_base, 8, 4)
VSML_ENTRY(, f32_n16_base, 16, 4)
VSML_ENTRY(, f32_n32_base, 32, 4)
#endif
#if METALEARN_X86_DISPATCH
VSML_ENTRY(METALEARN_TARGET_V3, f32_n4_avx2, 4, 4)
VSML_ENTRY(METALEARN_TARGET_V3, f32_n12_avx2, 12, 4)
VSML_ENTRY(METALEARN_TARGET_V3, f32_n24_avx2, 24, 8)
VSML_ENTRY(METALEARN_TARGET_V3, f32_n8_avx2, 8, 8)
VSML_ENTRY(METALEARN_TARGET_V3, f32_n16_avx2, 16, 8)
VSML_ENTRY(METALEARN_TARGET_V3, f32_n32_avx2, 32, 8)
VSML_ENTRY(METALEARN_TARGET_V4, f32_n8_avx512, 8, 8)
VSML_ENTRY(METALEARN_TARGET_V4, f32_n16_avx512, 16, 16)
VSML_ENTRY(METALEARN_TARGET_V4, f32_n32_avx512, 32, 16)
#endif
#undef VSML_ENTRY

ChunkFns pick_f32(int64_t N) {
#define VSML_PICK(name) \
  return { fwd_##name, bwd_##name }
#if METALEARN_X86_DISPATCH
  const int level = x86_level();
  if (level == kIsaAvx512 && N == 8) VSML_PICK(f32_n8_avx512);
  if (level == kIsaAvx512 && N == 16) VSML_PICK(f32_n16_avx512);
  if (level == kIsaAvx512 && N == 32) VSML_PICK(f32_n32_avx512);
  if (level >= kIsaAvx2 && N == 4) VSML_PICK(f32_n4_avx2);
  if (level >= kIsaAvx2 && N == 12) VSML_PICK(f32_n12_avx2);
  if (level >= kIsaAvx2 && N == 24) VSML_PICK(f32_n24_avx2);
  if (level >= kIsaAvx2 && N == 8) VSML_PICK(f32_n8_avx2);
  if (level >= kIsaAvx2 && N == 16) VSML_PICK(f32_n16_avx2);
  if (level >= kIsaAvx2 && N == 32) VSML_PICK(f32_n32_avx2);
#endif
#if METALEARN_SIMD
  if (N == 4) VSML_PICK(f32_n4_base);
  if (N == 12) VSML_PICK(f32_n12_base);
  if (N == 24) VSML_PICK(f32_n24_base);
  if (N == 8) VSML_PICK(f32_n8_base);
  if (N == 16) VSML_PICK(f32_n16_base);
  if (N == 32) VSML_PICK(f32_n32_base);
#endif
  VSML_PICK(f32_any);
#undef VSML_PICK
}

void fwd_f64_any(const FwdArgs<double>& p, int64_t c) { fwd_chunk<double, 0, 4>(p, c); }
void bwd_f64_any(const BwdArgs<double>& p, int64_t c) { bwd_chunk<double, 0, 4>(p, c); }

FwdChunkFn pick(const FwdArgs<float>& p) { return pick_f32(p.N).fwd; }
BwdChunkFn pick(const BwdArgs<float>& p) { return pick_f32(p.N).bwd; }
auto pick(const FwdArgs<double>&) { return fwd_f64_any; }
auto pick(const BwdArgs<double>&) { return bwd_f64_any; }

}  // namespace

// Forward core (VsmlForwardKernel, csrc/vsml_step.h).
void vsml_forward_cpu(const at::Tensor& h, const at::Tensor& c, const at::Tensor& row, const at::Tensor& col,
                      const at::Tensor& w_h, int64_t ticks, at::Tensor& h_out, at::Tensor& c_out,
                      at::Tensor& fwd_mean, at::Tensor& bwd_mean) {
  const int64_t T = h.size(0), A = h.size(1), B = h.size(2), N = h.size(3);
  const auto w_t = w_h.transpose(1, 2).contiguous();  // (Tw, N, 4N): the gate matvec runs along 4N
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "vsml_forward_cpu", [&] {
    FwdArgs<scalar_t> p;
    p.h = h.const_data_ptr<scalar_t>();
    p.c = c.const_data_ptr<scalar_t>();
    p.row = row.const_data_ptr<scalar_t>();
    p.col = col.const_data_ptr<scalar_t>();
    p.w_t = w_t.const_data_ptr<scalar_t>();
    p.h_out = h_out.mutable_data_ptr<scalar_t>();
    p.c_out = c_out.mutable_data_ptr<scalar_t>();
    p.fwd_mean = fwd_mean.mutable_data_ptr<scalar_t>();
    p.bwd_mean = bwd_mean.mutable_data_ptr<scalar_t>();
    p.T_ = T, p.A = A, p.B = B, p.N = N, p.K = ticks, p.Tw = w_h.size(0);
    p.nchunks = choose_chunks(T * A, T * A * B * ticks * 8 * N * N);
    std::vector<scalar_t> slots(p.nchunks * 2 * B * N);
    std::vector<int64_t> slot_t(p.nchunks * 2, -1);
    p.slots = slots.data();
    p.slot_t = slot_t.data();
    const auto chunk_fn = pick(p);
    at::parallel_for(0, p.nchunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ch = c0; ch < c1; ++ch) chunk_fn(p, ch);
    });
    // Copies shared between ranges: fwd_mean[t] = sum of the partial sums / A.
    const scalar_t invA = scalar_t(1) / scalar_t(A);
    for (int64_t i = 0; i < p.nchunks * 2; ++i)
      if (slot_t[i] >= 0) std::fill_n(p.fwd_mean + slot_t[i] * B * N, B * N, scalar_t(0));
    for (int64_t i = 0; i < p.nchunks * 2; ++i) {
      if (slot_t[i] < 0) continue;
      scalar_t* dst = p.fwd_mean + slot_t[i] * B * N;
      const scalar_t* src = p.slots + i * B * N;
      for (int64_t j = 0; j < B * N; ++j) dst[j] += src[j] * invA;
    }
  });
}

// Backward core (VsmlBackwardKernel, csrc/vsml_step.h).
void vsml_backward_cpu(const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_fwd_mean,
                       const at::Tensor& grad_bwd_mean, const at::Tensor& h, const at::Tensor& c,
                       const at::Tensor& row, const at::Tensor& col, const at::Tensor& w_h, int64_t ticks,
                       at::Tensor& grad_h0, at::Tensor& grad_c0, at::Tensor& g_row, at::Tensor& g_col,
                       at::Tensor& g_wh) {
  const int64_t T = h.size(0), A = h.size(1), B = h.size(2), N = h.size(3), G = 4 * N;
  const auto w = w_h.contiguous();
  const auto w_t = w_h.transpose(1, 2).contiguous();
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "vsml_backward_cpu", [&] {
    BwdArgs<scalar_t> p;
    p.gh = grad_h.const_data_ptr<scalar_t>();
    p.gc = grad_c.const_data_ptr<scalar_t>();
    p.gfm = grad_fwd_mean.const_data_ptr<scalar_t>();
    p.gbm = grad_bwd_mean.const_data_ptr<scalar_t>();
    p.h = h.const_data_ptr<scalar_t>();
    p.c = c.const_data_ptr<scalar_t>();
    p.row = row.const_data_ptr<scalar_t>();
    p.col = col.const_data_ptr<scalar_t>();
    p.w = w.const_data_ptr<scalar_t>();
    p.w_t = w_t.const_data_ptr<scalar_t>();
    p.gh0 = grad_h0.mutable_data_ptr<scalar_t>();
    p.gc0 = grad_c0.mutable_data_ptr<scalar_t>();
    p.g_row = g_row.mutable_data_ptr<scalar_t>();
    p.g_col = g_col.mutable_data_ptr<scalar_t>();
    p.g_wh = g_wh.mutable_data_ptr<scalar_t>();
    p.T_ = T, p.A = A, p.B = B, p.N = N, p.K = ticks, p.Tw = w_h.size(0);
    p.nchunks = choose_chunks(T * A, T * A * B * ticks * 24 * N * N);
    const int64_t slot_size = B * G + G * N;
    std::vector<scalar_t> slots(p.nchunks * 2 * slot_size);
    std::vector<int64_t> slot_t(p.nchunks * 2, -1);
    p.slots = slots.data();
    p.slot_t = slot_t.data();
    const auto chunk_fn = pick(p);
    at::parallel_for(0, p.nchunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ch = c0; ch < c1; ++ch) chunk_fn(p, ch);
    });
    for (int64_t i = 0; i < p.nchunks * 2; ++i) {
      if (slot_t[i] < 0) continue;
      scalar_t* dst_col = p.g_col + slot_t[i] * B * G;
      scalar_t* dst_wh = p.g_wh + slot_t[i] * G * N;
      const scalar_t* src = p.slots + i * slot_size;
      for (int64_t j = 0; j < B * G; ++j) dst_col[j] += src[j];
      for (int64_t j = 0; j < G * N; ++j) dst_wh[j] += src[B * G + j];
    }
  });
}

TORCH_LIBRARY_IMPL(metalearn_ext, CPU, m) {
  m.impl("vsml_step", [](const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in, const at::Tensor& bwd_in,
                         const at::Tensor& weight, const at::Tensor& bias, int64_t ticks) {
    return metalearn_ext::vsml_step_forward(h, c, fwd_in, bwd_in, weight, bias, ticks, &vsml_forward_cpu);
  });
  m.impl("vsml_step_backward",
         [](const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_fwd_mean,
            const at::Tensor& grad_bwd_mean, const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in,
            const at::Tensor& bwd_in, const at::Tensor& weight, const at::Tensor& bias, int64_t ticks) {
           return metalearn_ext::vsml_step_backward(grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, h, c, fwd_in,
                                                    bwd_in, weight, bias, ticks, &vsml_backward_cpu);
         });
}
