// CPU kernels of metalearn_ext::vsml_step (specs/vsml.md §1): the per-synapse cores behind
// VsmlForwardKernel / VsmlBackwardKernel (csrc/vsml_step.h).
//
// Work is split into one contiguous range of rows (t, a) per thread; a row holds B contiguous synapses.
// bwd_mean[t,a] and g_row[t,a] are row-local. fwd_mean[t], g_col[t] and g_wh[t] are written directly
// when one thread owns every row of copy t, and through a per-thread partial slot otherwise (only the
// first and last copy of a range can be shared), reduced serially afterwards: deterministic, no atomics.
//
// float with N in {8, 16, 32} takes a fast path: GCC/Clang vector extensions over the 4N gate outputs,
// a polynomial exp for sigmoid/tanh (relative error ~1e-7), and on x86-64 with GCC runtime-dispatched
// AVX2+FMA / AVX-512 clones. Everything else (double, other N, other compilers) takes a scalar path
// with std::exp / std::tanh, exact enough for gradcheck.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../vsml_step.h"

#if defined(__GNUC__) || defined(__clang__)
#define VSML_FAST_PATH 1
#define VSML_INLINE inline __attribute__((always_inline))
#else
#define VSML_FAST_PATH 0
#define VSML_INLINE inline
#endif

// ifunc-based multiversioning: safe on any x86-64 (the resolver checks the CPU), no -march needed.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define VSML_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VSML_CLONES
#endif

namespace {

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

// Rows [r0, r1) of chunk `chunk` out of `nchunks` equal contiguous ranges of T*A rows.
inline void chunk_rows(int64_t rows, int64_t nchunks, int64_t chunk, int64_t& r0, int64_t& r1) {
  r0 = rows * chunk / nchunks;
  r1 = rows * (chunk + 1) / nchunks;
}

// A few microseconds of fork/join are not worth it for tiny problems.
inline int64_t choose_chunks(int64_t rows, int64_t flops) {
  if (flops < (int64_t{1} << 17) || at::in_parallel_region()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
}

// ---------------------------------------------------------------------------------------------
// Scalar path (any N, float or double): exact libm activations
// ---------------------------------------------------------------------------------------------

template <typename T>
inline T sigmoid_exact(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

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

#if VSML_FAST_PATH
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

VSML_INLINE v8f vload(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
VSML_INLINE void vstore(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }
VSML_INLINE v8f vset(float x) { return v8f{x, x, x, x, x, x, x, x}; }
VSML_INLINE v8f vselect(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }

// exp with Cephes' range reduction and polynomial (relative error ~1e-7). Branch-free; NaN stays NaN
// (the clamps keep NaN, the polynomial of NaN is NaN). Above 88.37 it returns +inf (so sigmoid
// saturates to exactly 0 and 0 * inf gives NaN as in PyTorch); below -87 it returns exp(-87), which
// callers only ever add to 1.
VSML_INLINE v8f vexp(v8f x) {
  const v8f hi = vset(88.3762626647949f), lo = vset(-87.0f), magic = vset(12582912.0f);  // 1.5 * 2^23
  const v8i overflow = x > hi;
  x = vselect(overflow, hi, x);
  x = vselect(x < lo, lo, x);
  const v8f k = x * 1.44269504088896341f + magic;  // round(x / ln 2) in the low mantissa bits
  const v8f n = k - magic;
  const v8u ni = (v8u)k - (v8u)magic;
  v8f r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const v8f scale = (v8f)((ni + 127u) << 23);
  return vselect(overflow, vset(__builtin_inff()), y * scale);
}

VSML_INLINE v8f vsigmoid(v8f x) { return 1.0f / (vexp(-x) + 1.0f); }

// tanh: Cephes' odd polynomial below |x| = 0.625 (keeps relative accuracy near 0), else 1 - 2/(e^{2|x|}+1).
VSML_INLINE v8f vtanh(v8f x) {
  const v8u sign = (v8u)x & 0x80000000u;
  const v8f ax = (v8f)((v8u)x & 0x7fffffffu);
  const v8f e = vexp(ax + ax);
  const v8f big = (v8f)((v8u)(1.0f - 2.0f / (e + 1.0f)) | sign);
  const v8f z = x * x;
  v8f q = z * -5.70498872745e-3f + 2.06390887954e-2f;
  q = q * z - 5.37397155531e-2f;
  q = q * z + 1.33314422036e-1f;
  q = q * z - 3.33332819422e-1f;
  const v8f small = x + x * z * q;
  return vselect(ax < vset(0.625f), small, big);
}

// The fast path runs S = 2 synapses in lockstep: one synapse-tick is a long chain of dependent
// latency-bound steps (matvec, exp polynomials, divisions, tanh of the new cell), and a second
// independent chain roughly doubles the work in flight. Every W_h load then feeds two FMAs.

// z[s] = base[s] + W_h h[s] for S synapses, with w_t = W_h^T (N, 4N) row-major, hs = h as scalars.
template <int N, int S>
VSML_INLINE void gate_matvec(v8f (*z)[N / 2], const v8f (*base)[N / 2], const float* w_t, const float (*hs)[N]) {
  constexpr int G = 4 * N, GV = G / 8;
  constexpr int JB = GV < 8 / S ? GV : 8 / S;  // output vectors per pass: 8 accumulators in all
  constexpr int P = 8 / (S * JB) > 1 ? 8 / (S * JB) : 1;  // independent partial sums per output
  static_assert(N % P == 0 && GV % JB == 0, "unsupported N");
#pragma GCC unroll 8
  for (int jb = 0; jb < GV; jb += JB) {
    v8f acc[S][P][JB];
#pragma GCC unroll 2
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 8
      for (int jj = 0; jj < JB; ++jj) {
        acc[s][0][jj] = base[s][jb + jj];
#pragma GCC unroll 8
        for (int pp = 1; pp < P; ++pp) acc[s][pp][jj] = vset(0.0f);
      }
#pragma GCC unroll 32
    for (int n = 0; n < N; n += P) {
#pragma GCC unroll 8
      for (int pp = 0; pp < P; ++pp) {
        const float* wr = w_t + (n + pp) * G + jb * 8;
        v8f hb[S];
#pragma GCC unroll 2
        for (int s = 0; s < S; ++s) hb[s] = vset(hs[s][n + pp]);
#pragma GCC unroll 8
        for (int jj = 0; jj < JB; ++jj) {
          const v8f wv = vload(wr + jj * 8);
#pragma GCC unroll 2
          for (int s = 0; s < S; ++s) acc[s][pp][jj] += wv * hb[s];
        }
      }
    }
#pragma GCC unroll 2
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 8
      for (int jj = 0; jj < JB; ++jj) {
        v8f sum = acc[s][0][jj];
#pragma GCC unroll 8
        for (int pp = 1; pp < P; ++pp) sum += acc[s][pp][jj];
        z[s][jb + jj] = sum;
      }
  }
}

// dh[s] = W_h^T dz[s] for S synapses, with w = W_h (4N, N) row-major.
template <int N, int S>
VSML_INLINE void state_matvec_t(v8f (*dh)[N / 8], const float* w, const float* const* dz) {
  constexpr int G = 4 * N, NV = N / 8;
  constexpr int P = 8 / (S * NV) > 1 ? 8 / (S * NV) : 1;
  static_assert(G % P == 0, "unsupported N");
  v8f acc[S][P][NV];
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 8
    for (int pp = 0; pp < P; ++pp)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[s][pp][v] = vset(0.0f);
#pragma GCC unroll 16
  for (int j = 0; j < G; j += P) {
#pragma GCC unroll 8
    for (int pp = 0; pp < P; ++pp) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const v8f wv = vload(w + (j + pp) * N + v * 8);
#pragma GCC unroll 2
        for (int s = 0; s < S; ++s) acc[s][pp][v] += wv * vset(dz[s][j + pp]);
      }
    }
  }
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      v8f sum = acc[s][0][v];
#pragma GCC unroll 8
      for (int pp = 1; pp < P; ++pp) sum += acc[s][pp][v];
      dh[s][v] = sum;
    }
}

// One LSTM tick of S synapses; with kKeep, stores activations (i, f, g, o) at act + s*act_stride
// and tanh(c') at tc + s*tc_stride.
template <int N, int S, bool kKeep>
VSML_INLINE void lstm_tick(v8f (*hv)[N / 8], v8f (*cv)[N / 8], const v8f (*base)[N / 2], const float* w_t, float* act,
                           int64_t act_stride, float* tc, int64_t tc_stride) {
  constexpr int NV = N / 8, GV = N / 2;
  float hs[S][N];
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) vstore(hs[s] + v * 8, hv[s][v]);
  v8f z[S][GV];
  gate_matvec<N, S>(z, base, w_t, hs);
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const v8f i = vsigmoid(z[s][v]), f = vsigmoid(z[s][NV + v]), g = vtanh(z[s][2 * NV + v]),
                o = vsigmoid(z[s][3 * NV + v]);
      cv[s][v] = f * cv[s][v] + i * g;
      const v8f t = vtanh(cv[s][v]);
      hv[s][v] = o * t;
      if (kKeep) {
        float* a = act + s * act_stride;
        vstore(a + v * 8, i);
        vstore(a + N + v * 8, f);
        vstore(a + 2 * N + v * 8, g);
        vstore(a + 3 * N + v * 8, o);
        vstore(tc + s * tc_stride + v * 8, t);
      }
    }
}

// Synapses b0 .. b0+S-1 of row (t, a) through all ticks; adds h' to facc[b] and bsum.
template <int N, int S>
VSML_INLINE void fwd_synapses_fast(const FwdArgs<float>& p, const float* w_t, const v8f* rowv, const float* colp,
                                   int64_t s0, int64_t b0, float* facc, v8f* bsum) {
  constexpr int G = 4 * N, NV = N / 8, GV = G / 8;
  v8f hv[S][NV], cv[S][NV], base[S][GV];
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + s) * N;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      hv[s][v] = vload(p.h + o + v * 8);
      cv[s][v] = vload(p.c + o + v * 8);
    }
#pragma GCC unroll 16
    for (int v = 0; v < GV; ++v) base[s][v] = rowv[v] + vload(colp + (b0 + s) * G + v * 8);
  }
  for (int64_t k = 0; k < p.K; ++k) lstm_tick<N, S, false>(hv, cv, base, w_t, nullptr, 0, nullptr, 0);
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + s) * N;
    float* fa = facc + (b0 + s) * N;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      vstore(p.h_out + o + v * 8, hv[s][v]);
      vstore(p.c_out + o + v * 8, cv[s][v]);
      bsum[v] += hv[s][v];
      vstore(fa + v * 8, vload(fa + v * 8) + hv[s][v]);
    }
  }
}

template <int N>
VSML_INLINE void fwd_row_fast(const FwdArgs<float>& p, int64_t t, int64_t a, float* facc) {
  constexpr int G = 4 * N, NV = N / 8, GV = G / 8;
  const int64_t B = p.B;
  const float* w_t = p.w_t + (p.Tw == 1 ? 0 : t) * int64_t{N} * G;
  const float* rowp = p.row + (t * p.A + a) * G;
  const float* colp = p.col + t * B * G;
  const int64_t s0 = (t * p.A + a) * B * N;
  v8f rowv[GV], bsum[NV];
  for (int v = 0; v < GV; ++v) rowv[v] = vload(rowp + v * 8);
  for (int v = 0; v < NV; ++v) bsum[v] = vset(0.0f);
  int64_t b = 0;
  for (; b + 2 <= B; b += 2) fwd_synapses_fast<N, 2>(p, w_t, rowv, colp, s0, b, facc, bsum);
  if (b < B) fwd_synapses_fast<N, 1>(p, w_t, rowv, colp, s0, b, facc, bsum);
  const float invB = 1.0f / float(B);
  for (int v = 0; v < NV; ++v) vstore(p.bwd_mean + (t * p.A + a) * N + v * 8, bsum[v] * invB);
}

// Synapses per block of the backward (even, for the pairs): dz and h_{k-1} of a block are buffered
// so that g_wh is updated by one small register-blocked GEMM per block instead of a rank-1 update per
// synapse-tick.
inline int64_t bwd_block(int64_t K) { return std::max<int64_t>(2, 64 / K / 2 * 2); }
inline int64_t bwd_fast_scratch(int64_t N, int64_t K) {
  const int64_t G = 4 * N, S = bwd_block(K) * K;
  return 2 * K * (G + 2 * N) + S * (G + N) + G;
}

// gwh (4N, N) += DZ^T HP over S synapse-ticks; DZ (S, 4N), HP (S, N).
template <int N>
VSML_INLINE void gwh_update(float* gwh, const float* DZ, const float* HP, int64_t S) {
  constexpr int G = 4 * N, NV = N / 8, JB = 8 / NV;
  for (int j0 = 0; j0 < G; j0 += JB) {
    v8f acc[JB][NV];
#pragma GCC unroll 8
    for (int jj = 0; jj < JB; ++jj)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[jj][v] = vload(gwh + (j0 + jj) * N + v * 8);
    for (int64_t s = 0; s < S; ++s) {
      v8f hp[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) hp[v] = vload(HP + s * N + v * 8);
#pragma GCC unroll 8
      for (int jj = 0; jj < JB; ++jj) {
        const v8f d = vset(DZ[s * G + j0 + jj]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[jj][v] += d * hp[v];
      }
    }
#pragma GCC unroll 8
    for (int jj = 0; jj < JB; ++jj)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) vstore(gwh + (j0 + jj) * N + v * 8, acc[jj][v]);
  }
}

// Backward of synapses b0+ib .. b0+ib+S-1 (block-local index ib) of row (t, a): recompute the ticks
// keeping this synapse's states in scratch, then walk them back. dz and h_{k-1} go to the block buffers.
template <int N, int S>
VSML_INLINE void bwd_synapses_fast(const BwdArgs<float>& p, int64_t t, int64_t a, const float* w, const float* w_t,
                                   const v8f* rowv, const v8f* gbm_v, int64_t b0, int64_t ib, float* scratch,
                                   float* DZ, float* HP) {
  constexpr int G = 4 * N, NV = N / 8, GV = G / 8;
  const int64_t B = p.B, K = p.K;
  const float* colp = p.col + t * B * G;
  const int64_t s0 = (t * p.A + a) * B * N;
  const float invA = 1.0f / float(p.A);
  // Per synapse s of the group: ACT (K, 4N) activations, TC (K, N) tanh(c_k), CP (K, N) c_{k-1}.
  const int64_t stride = K * (G + 2 * N);
  float* ACT = scratch;
  float* TC = ACT + K * G;
  float* CP = TC + K * N;
  v8f hv[S][NV], cv[S][NV], base[S][GV];
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + ib + s) * N;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      hv[s][v] = vload(p.h + o + v * 8);
      cv[s][v] = vload(p.c + o + v * 8);
    }
#pragma GCC unroll 16
    for (int v = 0; v < GV; ++v) base[s][v] = rowv[v] + vload(colp + (b0 + ib + s) * G + v * 8);
  }
  for (int64_t k = 0; k < K; ++k) {
#pragma GCC unroll 2
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        vstore(HP + ((ib + s) * K + k) * N + v * 8, hv[s][v]);
        vstore(CP + s * stride + k * N + v * 8, cv[s][v]);
      }
    lstm_tick<N, S, true>(hv, cv, base, w_t, ACT + k * G, stride, TC + k * N, stride);
  }
  v8f dh[S][NV], dc[S][NV];
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s) {
    const int64_t b = b0 + ib + s, o = s0 + b * N;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      dh[s][v] = vload(p.gh + o + v * 8) + vload(p.gfm + (t * B + b) * N + v * 8) * invA + gbm_v[v];
      dc[s][v] = vload(p.gc + o + v * 8);
    }
  }
  for (int64_t k = K - 1; k >= 0; --k) {
    const float* dzs[S];
#pragma GCC unroll 2
    for (int s = 0; s < S; ++s) {
      const float* act = ACT + s * stride + k * G;
      const float* tcp = TC + s * stride + k * N;
      const float* cpp = CP + s * stride + k * N;
      float* dz = DZ + ((ib + s) * K + k) * G;
      dzs[s] = dz;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const v8f i = vload(act + v * 8), f = vload(act + N + v * 8), g = vload(act + 2 * N + v * 8),
                  o = vload(act + 3 * N + v * 8), tc = vload(tcp + v * 8);
        const v8f d_o = dh[s][v] * tc;
        const v8f dcn = dc[s][v] + dh[s][v] * o * (1.0f - tc * tc);
        vstore(dz + v * 8, dcn * g * i * (1.0f - i));
        vstore(dz + N + v * 8, dcn * vload(cpp + v * 8) * f * (1.0f - f));
        vstore(dz + 2 * N + v * 8, dcn * i * (1.0f - g * g));
        vstore(dz + 3 * N + v * 8, d_o * o * (1.0f - o));
        dc[s][v] = dcn * f;
      }
    }
    state_matvec_t<N, S>(dh, w, dzs);
  }
#pragma GCC unroll 2
  for (int s = 0; s < S; ++s) {
    const int64_t o = s0 + (b0 + ib + s) * N;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      vstore(p.gh0 + o + v * 8, dh[s][v]);
      vstore(p.gc0 + o + v * 8, dc[s][v]);
    }
  }
}

template <int N>
VSML_INLINE void bwd_row_fast(const BwdArgs<float>& p, int64_t t, int64_t a, float* gcol, float* gwh,
                              float* scratch) {
  constexpr int G = 4 * N, NV = N / 8, GV = G / 8;
  const int64_t B = p.B, K = p.K, SB = bwd_block(K);
  const int64_t tw = p.Tw == 1 ? 0 : t;
  const float* w = p.w + tw * int64_t{G} * N;
  const float* w_t = p.w_t + tw * int64_t{N} * G;
  const float* rowp = p.row + (t * p.A + a) * G;
  const float invB = 1.0f / float(B);
  float* DZ = scratch + 2 * K * (G + 2 * N);  // (SB*K, 4N) gate gradients of the block
  float* HP = DZ + SB * K * G;                // (SB*K, N) h_{k-1} of the block
  float* grow = HP + SB * K * N;              // (4N) row sum of dz
  v8f rowv[GV], gbm_v[NV];
  for (int v = 0; v < GV; ++v) rowv[v] = vload(rowp + v * 8);
  for (int v = 0; v < NV; ++v) gbm_v[v] = vload(p.gbm + (t * p.A + a) * N + v * 8) * invB;
  for (int j = 0; j < G; ++j) grow[j] = 0.0f;

  for (int64_t b0 = 0; b0 < B; b0 += SB) {
    const int64_t nb = std::min(SB, B - b0);
    int64_t ib = 0;
    for (; ib + 2 <= nb; ib += 2) bwd_synapses_fast<N, 2>(p, t, a, w, w_t, rowv, gbm_v, b0, ib, scratch, DZ, HP);
    if (ib < nb) bwd_synapses_fast<N, 1>(p, t, a, w, w_t, rowv, gbm_v, b0, ib, scratch, DZ, HP);
    // Block epilogue: g_col[b] += sum_k dz, g_row += sum_{b,k} dz, g_wh += DZ^T HP.
    for (ib = 0; ib < nb; ++ib) {
      float* gc = gcol + (b0 + ib) * G;
      v8f acc[GV];
#pragma GCC unroll 16
      for (int v = 0; v < GV; ++v) acc[v] = vload(DZ + ib * K * G + v * 8);
      for (int64_t k = 1; k < K; ++k) {
#pragma GCC unroll 16
        for (int v = 0; v < GV; ++v) acc[v] += vload(DZ + (ib * K + k) * G + v * 8);
      }
#pragma GCC unroll 16
      for (int v = 0; v < GV; ++v) {
        vstore(grow + v * 8, vload(grow + v * 8) + acc[v]);
        vstore(gc + v * 8, vload(gc + v * 8) + acc[v]);
      }
    }
    gwh_update<N>(gwh, DZ, HP, nb * K);
  }
  float* gr = p.g_row + (t * p.A + a) * G;
  for (int j = 0; j < G; ++j) gr[j] += grow[j];
}

#pragma GCC diagnostic pop
#endif  // VSML_FAST_PATH

// ---------------------------------------------------------------------------------------------
// Chunk drivers: one contiguous range of rows, shared outputs per copy t (see the file comment)
// ---------------------------------------------------------------------------------------------

template <typename T, int NC>
VSML_INLINE void fwd_chunk(const FwdArgs<T>& p, int64_t chunk) {
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
#if VSML_FAST_PATH
      if constexpr (NC != 0) {
        fwd_row_fast<NC>(p, t, a, facc);
        continue;
      }
#endif
      fwd_row_scalar<T>(p, t, a, facc, scratch.data());
    }
    if (owned)
      for (int64_t i = 0; i < B * N; ++i) facc[i] *= invA;
  }
}

template <typename T, int NC>
VSML_INLINE void bwd_chunk(const BwdArgs<T>& p, int64_t chunk) {
  const int64_t N = p.N, G = 4 * N, B = p.B;
  int64_t r0, r1;
  chunk_rows(p.T_ * p.A, p.nchunks, chunk, r0, r1);
#if VSML_FAST_PATH
  std::vector<T> scratch(NC != 0 ? bwd_fast_scratch(N, p.K) : bwd_scalar_scratch(N, p.K));
#else
  std::vector<T> scratch(bwd_scalar_scratch(N, p.K));
#endif
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
    for (int64_t a = a0; a < a1; ++a) {
#if VSML_FAST_PATH
      if constexpr (NC != 0) {
        bwd_row_fast<NC>(p, t, a, gcol, gwh, scratch.data());
        continue;
      }
#endif
      bwd_row_scalar<T>(p, t, a, gcol, gwh, scratch.data());
    }
  }
}

// Multiversioned entry points (the clones inline everything above).
VSML_CLONES void fwd_chunk_f32_n8(const FwdArgs<float>& p, int64_t c) { fwd_chunk<float, 8>(p, c); }
VSML_CLONES void fwd_chunk_f32_n16(const FwdArgs<float>& p, int64_t c) { fwd_chunk<float, 16>(p, c); }
VSML_CLONES void fwd_chunk_f32_n32(const FwdArgs<float>& p, int64_t c) { fwd_chunk<float, 32>(p, c); }
VSML_CLONES void fwd_chunk_f32_any(const FwdArgs<float>& p, int64_t c) { fwd_chunk<float, 0>(p, c); }
VSML_CLONES void fwd_chunk_f64_any(const FwdArgs<double>& p, int64_t c) { fwd_chunk<double, 0>(p, c); }
VSML_CLONES void bwd_chunk_f32_n8(const BwdArgs<float>& p, int64_t c) { bwd_chunk<float, 8>(p, c); }
VSML_CLONES void bwd_chunk_f32_n16(const BwdArgs<float>& p, int64_t c) { bwd_chunk<float, 16>(p, c); }
VSML_CLONES void bwd_chunk_f32_n32(const BwdArgs<float>& p, int64_t c) { bwd_chunk<float, 32>(p, c); }
VSML_CLONES void bwd_chunk_f32_any(const BwdArgs<float>& p, int64_t c) { bwd_chunk<float, 0>(p, c); }
VSML_CLONES void bwd_chunk_f64_any(const BwdArgs<double>& p, int64_t c) { bwd_chunk<double, 0>(p, c); }

using FwdChunkFn = void (*)(const FwdArgs<float>&, int64_t);
using BwdChunkFn = void (*)(const BwdArgs<float>&, int64_t);

void fwd_chunk_any(const FwdArgs<float>& p, int64_t c) {
  FwdChunkFn fn = fwd_chunk_f32_any;
#if VSML_FAST_PATH
  fn = p.N == 8 ? fwd_chunk_f32_n8 : p.N == 16 ? fwd_chunk_f32_n16 : p.N == 32 ? fwd_chunk_f32_n32 : fn;
#endif
  fn(p, c);
}
void fwd_chunk_any(const FwdArgs<double>& p, int64_t c) { fwd_chunk_f64_any(p, c); }
void bwd_chunk_any(const BwdArgs<float>& p, int64_t c) {
  BwdChunkFn fn = bwd_chunk_f32_any;
#if VSML_FAST_PATH
  fn = p.N == 8 ? bwd_chunk_f32_n8 : p.N == 16 ? bwd_chunk_f32_n16 : p.N == 32 ? bwd_chunk_f32_n32 : fn;
#endif
  fn(p, c);
}
void bwd_chunk_any(const BwdArgs<double>& p, int64_t c) { bwd_chunk_f64_any(p, c); }

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
    at::parallel_for(0, p.nchunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ch = c0; ch < c1; ++ch) fwd_chunk_any(p, ch);
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
    at::parallel_for(0, p.nchunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ch = c0; ch < c1; ++ch) bwd_chunk_any(p, ch);
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
