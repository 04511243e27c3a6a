// Op-agnostic SIMD math for the CPU kernels: L-lane float vectors (GCC/Clang vector extensions; 16
// lanes for AVX-512, 8 for AVX2, 4 elsewhere), loads and stores, a branch-free sigmoid and tanh with
// errors ~1e-7, the libm sigmoid of the scalar paths, and register-blocking arithmetic.
//
// METALEARN_SIMD is 1 where the vector extensions exist (GCC, Clang): kernels compile their vector
// paths under `#if METALEARN_SIMD` and keep a scalar path for everything else. Everything here is
// inline and always-inlined into its caller, so a caller compiled for another ISA
// (isa_dispatch.h) gets its own copy built for that ISA.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) || defined(__clang__)
#define METALEARN_SIMD 1
#define METALEARN_INLINE inline __attribute__((always_inline))
#else
#define METALEARN_SIMD 0
#define METALEARN_INLINE inline
#endif

namespace metalearn_ext::cpu {

// Exact (libm) sigmoid for the scalar paths: float or double, precise enough for gradcheck.
template <typename T>
inline T sigmoid_exact(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

constexpr int largest_divisor_at_most(int n, int bound) {
  int d = bound < 1 ? 1 : bound;
  while (n % d != 0) --d;
  return d;
}

#if METALEARN_SIMD
// Vector types in signatures change the ABI between ISAs; every caller is always-inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

// L-lane float vectors (GCC/Clang vector extensions): 16 for AVX-512, 8 for AVX2, 4 elsewhere.
template <int L>
struct Vec;
template <>
struct Vec<4> {
  typedef float f __attribute__((vector_size(16)));
  typedef int32_t i __attribute__((vector_size(16)));
  typedef uint32_t u __attribute__((vector_size(16)));
};
template <>
struct Vec<8> {
  typedef float f __attribute__((vector_size(32)));
  typedef int32_t i __attribute__((vector_size(32)));
  typedef uint32_t u __attribute__((vector_size(32)));
};
template <>
struct Vec<16> {
  typedef float f __attribute__((vector_size(64)));
  typedef int32_t i __attribute__((vector_size(64)));
  typedef uint32_t u __attribute__((vector_size(64)));
};

template <class V>
METALEARN_INLINE V vload(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
METALEARN_INLINE void vstore(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
template <class V>
METALEARN_INLINE V vset(float x) {
  return V{} + x;
}
// m ? a : b lane-wise, m a comparison result. GCC scalarizes 16-lane selects spelled with bit
// operations, and 8-lane ?: without SSE4.1: each width gets the spelling that GCC vectorizes.
template <class V, class M>
METALEARN_INLINE V vselect(M m, V a, V b) {
#if !defined(__clang__)
  if constexpr (sizeof(V) == 64) return m ? a : b;
#endif
  return (V)(((M)a & m) | ((M)b & ~m));
}

// sigmoid(x) = 1 / (1 + exp(-x)), keeping its relative accuracy where it is tiny. exp(-x) uses Cephes'
// range reduction and polynomial (relative error ~1e-7), written for -x so no negation is needed:
// -x = n ln2 + r with r = -(x + n ln2), exp(r) = 1 - r' + r'^2 P(-r') for r' = x + n ln2.
// Branch-free. -x is clamped to [-87, 88.8]: below, exp(-x) only ever gets added to 1; above, the
// scale 2^128 is +inf, so sigmoid saturates to exactly 0 (and 0 * inf gives NaN as in PyTorch).
// NaN stays NaN (the clamps keep NaN, the polynomial of NaN is NaN).
template <class V, class U>
METALEARN_INLINE V vsigmoid(V x) {
  const V lo = vset<V>(-88.8f), hi = vset<V>(87.0f), magic = vset<V>(12582912.0f);  // 1.5 * 2^23
  x = vselect(x < lo, lo, x);
  x = vselect(x > hi, hi, x);
  const V k = x * -1.44269504088896341f + magic;  // n = round(-x / ln 2) in the low mantissa bits
  const V n = k - magic;
  V r = x + n * 0.693359375f;  // r' = -r, in two steps for accuracy
  r = r + n * -2.12194440e-4f;
  V y = r * -1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r - 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r - 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + (1.0f - r);
  const V scale = (V)(((U)k << 23) + (127u << 23));  // 2^n: the low bits of k are n + 1.5 * 2^23
  return 1.0f / (y * scale + 1.0f);
}

// tanh: the odd 13/6 rational minimax approximation used by Eigen, XLA and MLAS; odd, so small
// arguments keep their relative accuracy. The argument is clamped to +-8.5558 (where the rational
// peaks), and results within 3e-7 of +-1 become +-1: exactly +-1 in saturation as in libm (so
// 1 - tanh^2 is exactly 0 there, as in PyTorch's autograd). NaN stays NaN.
template <class V>
METALEARN_INLINE V vtanh(V x) {
  const V hi = vset<V>(8.5558f), lo = vset<V>(-8.5558f), one = vset<V>(1.0f), minus_one = vset<V>(-1.0f);
  x = vselect(x > hi, hi, x);
  x = vselect(x < lo, lo, x);
  const V x2 = x * x;
  V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const V t = x * p / q;  // within 2 ulp of +-1 in saturation, on either side depending on FMA use
  const V near = vset<V>(0.9999997f);
  return vselect(t > near, one, vselect(t < -near, minus_one, t));
}

// How many vector accumulators a register-blocked loop may keep live: 16 with AVX-512's 32
// registers, else 8 (of 16).
template <int L>
constexpr int kAccumulators = L == 16 ? 16 : 8;

#pragma GCC diagnostic pop
#endif  // METALEARN_SIMD

}  // namespace metalearn_ext::cpu
