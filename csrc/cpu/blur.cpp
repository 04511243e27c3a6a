// CPU kernels of metalearn_ext::blur_propagate and blur_hebbian (specs/blur.md §3): the two products of
// cpu/blur_products.h behind BlurProducts (csrc/blur.h), for float and double, built for AVX-512,
// AVX2+FMA and the baseline and picked at run time (cpu/isa_dispatch.h).
//
// Work is split over at::parallel_for in units of (copy t, rows) — or, for the normalized Hebbian
// update, of (copy t, columns of every row), since a column's norm runs over all rows.
// Needs -fopenmp (compile and link) for at::parallel_for to run in parallel; correct without it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "blur.h"
#include "cpu/blur_products.h"
#include "cpu/isa_dispatch.h"
#include "cpu/parallel.h"

#if !METALEARN_SIMD
#error "the BLUR CPU kernels need GCC/Clang vector extensions"
#endif

namespace {

using namespace metalearn_ext::cpu;
using namespace metalearn_ext::cpu::blur;

// A launch is `units` independent work units: unit u is copy u / per_t, part u % per_t of it: rows
// [part·rows_per_unit, ...) of every column, or (panels) columns [part·cols_per_unit, ...) of every row.
struct Plan {
  int64_t per_t, rows_per_unit, cols_per_unit;
  bool panels;
};

constexpr int64_t kPanelAlign = 16;  // a multiple of every vector width, so panels start on a vector
constexpr int64_t kShortRow = 256;   // rows of the channel dot shorter than this take the kernel vectorized along s

template <typename T, int L, int K>
METALEARN_INLINE void pattern_units_k(const PatternArgs<T>& p, const Plan& plan, int64_t u0, int64_t u1) {
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t t = u / plan.per_t, part = u % plan.per_t;
    if (plan.panels) {
      const int64_t n0 = part * plan.cols_per_unit;
      pattern_unit<T, L, K>(p, t, 0, p.R, n0, std::min(p.N, n0 + plan.cols_per_unit));
    } else {
      const int64_t r0 = part * plan.rows_per_unit;
      pattern_unit<T, L, K>(p, t, r0, std::min(p.R, r0 + plan.rows_per_unit), 0, p.N);
    }
  }
}

// k = 2 or 4 dividing the vector width: the small-k path (compact mixed states, patterns broadcast in
// registers); any other k: Q-lane patterns packed in memory.
template <typename T, int L>
METALEARN_INLINE void pattern_units(const PatternArgs<T>& p, const Plan& plan, int64_t u0, int64_t u1) {
  if constexpr (L % 2 == 0) {
    if (p.k == 2) return pattern_units_k<T, L, 2>(p, plan, u0, u1);
  }
  if constexpr (L % 4 == 0) {
    if (p.k == 4) return pattern_units_k<T, L, 4>(p, plan, u0, u1);
  }
  pattern_units_k<T, L, 0>(p, plan, u0, u1);
}

// yt: null, or Y transposed per copy (T, N, Sp) for the short-row kernel.
template <typename T, int L>
METALEARN_INLINE void dot_units(const DotArgs<T>& p, const Plan& plan, int64_t u0, int64_t u1, const T* yt, int64_t Sp) {
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t t = u / plan.per_t, r0 = (u % plan.per_t) * plan.rows_per_unit;
    const int64_t r1 = std::min(p.R, r0 + plan.rows_per_unit);
    if (yt) dot_by_s_unit<T, L>(p, t, r0, r1, yt + t * p.N * Sp, Sp);
    else dot_unit<T, L>(p, t, r0, r1);
  }
}

template <typename T>
using PatternFn = void (*)(const PatternArgs<T>&, const Plan&, int64_t, int64_t);
template <typename T>
using DotFn = void (*)(const DotArgs<T>&, const Plan&, int64_t, int64_t, const T*, int64_t);

// One entry point per ISA and dtype; the vector widths are 64, 32 and 16 bytes.
#define BLUR_ENTRIES(TARGET, isa, LF, LD)                                                                         \
  TARGET void pattern_f32_##isa(const PatternArgs<float>& p, const Plan& pl, int64_t u0, int64_t u1) {           \
    pattern_units<float, LF>(p, pl, u0, u1);                                                                     \
  }                                                                                                              \
  TARGET void pattern_f64_##isa(const PatternArgs<double>& p, const Plan& pl, int64_t u0, int64_t u1) {          \
    pattern_units<double, LD>(p, pl, u0, u1);                                                                    \
  }                                                                                                              \
  TARGET void dot_f32_##isa(const DotArgs<float>& p, const Plan& pl, int64_t u0, int64_t u1, const float* yt,     \
                            int64_t Sp) {                                                                        \
    dot_units<float, LF>(p, pl, u0, u1, yt, Sp);                                                                 \
  }                                                                                                              \
  TARGET void dot_f64_##isa(const DotArgs<double>& p, const Plan& pl, int64_t u0, int64_t u1, const double* yt,  \
                            int64_t Sp) {                                                                        \
    dot_units<double, LD>(p, pl, u0, u1, yt, Sp);                                                                \
  }

#define METALEARN_TARGET_BASE
BLUR_ENTRIES(METALEARN_TARGET_BASE, base, 4, 2)
#if METALEARN_X86_DISPATCH
BLUR_ENTRIES(METALEARN_TARGET_V3, avx2, 8, 4)
BLUR_ENTRIES(METALEARN_TARGET_V4, avx512, 16, 8)
#endif
#undef BLUR_ENTRIES
#undef METALEARN_TARGET_BASE

#if METALEARN_X86_DISPATCH
#define BLUR_PICK(name)                                      \
  switch (x86_level()) {                                     \
    case kIsaAvx512: return name##_avx512;                   \
    case kIsaAvx2: return name##_avx2;                       \
    default: return name##_base;                             \
  }
#else
#define BLUR_PICK(name) return name##_base;
#endif
PatternFn<float> pick_pattern(float) { BLUR_PICK(pattern_f32) }
PatternFn<double> pick_pattern(double) { BLUR_PICK(pattern_f64) }
DotFn<float> pick_dot(float) { BLUR_PICK(dot_f32) }
DotFn<double> pick_dot(double) { BLUR_PICK(dot_f64) }
#undef BLUR_PICK

// Rows per unit so that the launch has about `chunks` units per copy (none when one thread runs it all).
Plan row_plan(int64_t T, int64_t R, int64_t chunks) {
  const int64_t per_t = std::max<int64_t>(1, std::min<int64_t>(R, (chunks + T - 1) / T));
  const int64_t rows = (R + per_t - 1) / per_t;
  return {(R + rows - 1) / rows, rows, 0, false};
}

template <class Body>
void run_parallel(int64_t units, int64_t chunks, const Body& body) {
  if (chunks <= 1) return body(0, units);
  at::parallel_for(0, units, 1, body);
}

at::Tensor pattern_cpu(const at::Tensor& A, const at::Tensor& mix, const at::Tensor& Bm,
                       const metalearn_ext::HebbianEpilogue& epi) {
  const int64_t T = A.size(0), R = A.size(1), S = A.size(2), k = A.size(3), N = Bm.size(2);
  auto C = at::empty({T, R, N}, Bm.options());
  const auto alpha = epi.weight.defined() ? epi.alpha : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(Bm.scalar_type(), "blur_pattern_cpu", [&] {
    PatternArgs<scalar_t> p{};
    p.A = A.const_data_ptr<scalar_t>();
    p.a_t = A.stride(0), p.a_r = A.stride(1), p.a_s = A.stride(2), p.a_c = A.stride(3);
    p.mix = mix.defined() ? mix.const_data_ptr<scalar_t>() : nullptr;
    p.mix_t = mix.defined() && mix.size(0) > 1 ? k * k : 0;
    p.Bm = Bm.const_data_ptr<scalar_t>();
    p.C = C.mutable_data_ptr<scalar_t>();
    p.R = R, p.S = S, p.N = N, p.k = k;
    if (epi.weight.defined()) {
      p.w = epi.weight.const_data_ptr<scalar_t>();
      p.alpha = alpha.const_data_ptr<scalar_t>();
      p.alpha_t = alpha.stride(0), p.alpha_n = alpha.stride(1);
      p.lr = epi.lr.const_data_ptr<scalar_t>();
      p.lr_t = epi.lr.stride(0);
      p.normalize = epi.normalize;
      p.eps = static_cast<scalar_t>(metalearn_ext::kBlurNormEps);
    }
    const int64_t chunks = choose_chunks(T * R, 2 * T * R * S * N);
    Plan plan;
    if (p.normalize) {  // a column's norm runs over every row: split the columns over the threads instead
      const int64_t per_t = (chunks + T - 1) / T;
      const int64_t cols = std::max<int64_t>(kPanelAlign, (N + per_t - 1) / per_t / kPanelAlign * kPanelAlign);
      plan = {(N + cols - 1) / cols, 0, cols, true};
    } else {
      plan = row_plan(T, R, chunks);
    }
    const auto fn = pick_pattern(scalar_t{});
    run_parallel(T * plan.per_t, chunks, [&](int64_t u0, int64_t u1) { fn(p, plan, u0, u1); });
  });
  return C;
}

at::Tensor dot_cpu(const at::Tensor& X, const at::Tensor& mix, const at::Tensor& Y) {
  const int64_t T = X.size(0), R = X.size(1), S = Y.size(1), k = X.size(3), N = X.size(2) * k;
  auto C = at::empty({T, R, S, k}, X.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "blur_dot_cpu", [&] {
    DotArgs<scalar_t> p{};
    p.X = X.const_data_ptr<scalar_t>();
    p.mix = mix.defined() ? mix.const_data_ptr<scalar_t>() : nullptr;
    p.mix_t = mix.defined() && mix.size(0) > 1 ? k * k : 0;
    p.Y = Y.const_data_ptr<scalar_t>();
    p.C = C.mutable_data_ptr<scalar_t>();
    p.R = R, p.S = S, p.N = N, p.k = k;
    const int64_t chunks = choose_chunks(T * R, 2 * T * R * S * N);
    const Plan plan = row_plan(T, R, chunks);
    // Short rows: folding the lanes of every (r, s) into k channels would cost more than the products, so
    // vectorize along s over a transposed, padded copy of Y (a copy the size of Y, read R times).
    at::Tensor yt;
    const int64_t Sp = (S + kPanelAlign - 1) / kPanelAlign * kPanelAlign;
    if (N < kShortRow && R >= 4) {  // one pass (a tensor transpose-copy costs ~10 µs at BLUR's sizes)
      yt = at::empty({T, N, Sp}, Y.options());
      const scalar_t* y = p.Y;
      scalar_t* d = yt.mutable_data_ptr<scalar_t>();
      for (int64_t t = 0; t < T; ++t, y += S * N, d += N * Sp) {
        for (int64_t n = 0; n < N; ++n) std::fill(d + n * Sp + S, d + (n + 1) * Sp, scalar_t(0));
        for (int64_t s = 0; s < S; ++s)
          for (int64_t n = 0; n < N; ++n) d[n * Sp + s] = y[s * N + n];
      }
    }
    const scalar_t* ytp = yt.defined() ? yt.const_data_ptr<scalar_t>() : nullptr;
    const auto fn = pick_dot(scalar_t{});
    run_parallel(T * plan.per_t, chunks, [&](int64_t u0, int64_t u1) { fn(p, plan, u0, u1, ytp, Sp); });
  });
  return C;
}

// The state vectors of the kernels are stack arrays of this many states.
void check_states(const at::Tensor& weight, const char* op) {
  TORCH_CHECK_VALUE(weight.dim() != 4 || weight.size(3) <= 64, op,
                    " (cpp): the number of states k = weight.size(3) must be at most 64, got ", weight.size(3),
                    "; use backend='reference'");
}

const metalearn_ext::BlurProducts kCpuProducts{&pattern_cpu, &dot_cpu};

}  // namespace

const metalearn_ext::BlurProducts& metalearn_ext::cpu_blur_products() { return kCpuProducts; }

TORCH_LIBRARY_IMPL(metalearn_ext, CPU, m) {
  m.impl("blur_propagate", [](const at::Tensor& a, const at::Tensor& weight, const at::Tensor& mix, bool transpose) {
    check_states(weight, "blur_propagate");
    return metalearn_ext::blur_propagate_forward(a, weight, mix, transpose, kCpuProducts);
  });
  m.impl("blur_propagate_backward", [](const at::Tensor& grad, const at::Tensor& a, const at::Tensor& weight,
                                       const at::Tensor& mix, bool transpose) {
    check_states(weight, "blur_propagate_backward");
    return metalearn_ext::blur_propagate_backward(grad, a, weight, mix, transpose, kCpuProducts);
  });
  m.impl("blur_hebbian", [](const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
                            const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay,
                            const at::Tensor& lr, bool normalize, bool oja) {
    check_states(weight, "blur_hebbian");
    return metalearn_ext::blur_hebbian_forward(weight, pre, post, pre_mix, post_mix, decay, lr, normalize, oja,
                                               kCpuProducts);
  });
  m.impl("blur_hebbian_backward",
         [](const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
            const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay, const at::Tensor& lr,
            bool normalize, bool oja) {
           check_states(weight, "blur_hebbian_backward");
           return metalearn_ext::blur_hebbian_backward(grad, weight, pre, post, pre_mix, post_mix, decay, lr,
                                                       normalize, oja, kCpuProducts);
         });
}
