// exp over L-lane float vectors (cpu/simd.h) for softmax rows, relative error ~1e-7: Cephes' range
// reduction and polynomial, the same as vsigmoid's exp. Arguments are clamped to [-87, 88.3], so
// exp underflows to ~1.6e-38 rather than 0 (harmless inside a softmax) and never overflows to inf.
#pragma once

#include "cpu/simd.h"

namespace metalearn_ext::cpu {

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

template <class V, class U>
METALEARN_INLINE V vexp(V x) {
  const V lo = vset<V>(-87.0f), hi = vset<V>(88.3f), magic = vset<V>(12582912.0f);  // 1.5 * 2^23
  x = vselect(x < lo, lo, x);
  x = vselect(x > hi, hi, x);
  const V k = x * 1.44269504088896341f + magic;  // n = round(x / ln 2) in the low mantissa bits
  const V n = k - magic;
  V r = x - n * 0.693359375f;  // x - n ln 2, in two steps for accuracy
  r = r - n * -2.12194440e-4f;
  V y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + (r + 1.0f);
  const V scale = (V)(((U)k << 23) + (127u << 23));  // 2^n: the low bits of k are n + 1.5 * 2^23
  return y * scale;
}

#pragma GCC diagnostic pop
#endif  // METALEARN_SIMD

}  // namespace metalearn_ext::cpu
