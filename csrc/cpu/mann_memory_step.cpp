// CPU kernels of metalearn_ext::mann_memory_step (specs/memory_np.md §1) behind csrc/mann_memory_step.h.
//
// One call per batch element b fuses the whole LRUA step: the H least-used slots (a partial selection,
// O(H·S), with the stable sort's tie rule: equal usage, lower index first), the zeroing of the least-used
// row, the write Σ_h w^w[h] ⊗ add[h], the content read of the new memory (cpu/content_read_core.h) and
// the usage update; the products with the memory's transpose run straight from its rows (rows_dot), no copy.
// The backward recomputes the new memory from the inputs and runs the content read's backward on it. at::parallel_for splits the batch into contiguous ranges.
// float runs builds for AVX-512 / AVX2+FMA / the baseline, picked at run time; double the baseline.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "content_read.h"
#include "cpu/content_read_core.h"
#include "cpu/isa_dispatch.h"
#include "cpu/parallel.h"
#include "cpu/mann_memory_step_core.h"
#include "mann_memory_step.h"

namespace {

using namespace metalearn_ext::cpu;

template <typename T>
using Args = MannStepArgs<T>;

// a orders before b in a stable ascending sort (NaN last, like torch.sort).
template <typename T>
METALEARN_INLINE bool sorts_before(T a, T b) {
  return a < b || (std::isnan(b) && !std::isnan(a));
}

// slots[0..H): the H smallest entries of u (S), smallest first; ties: lowest index. taken (S) is scratch.
template <typename T>
METALEARN_INLINE void least_used(const T* u, int64_t S, int64_t H, int64_t* slots, char* taken) {
  std::fill(taken, taken + S, 0);
  for (int64_t h = 0; h < H; ++h) {
    int64_t best = -1;
    for (int64_t s = 0; s < S; ++s)
      if (!taken[s] && (best < 0 || sorts_before(u[s], u[best]))) best = s;
    slots[h] = best;
    taken[best] = 1;
  }
}

// Mn (S,W) = M with row slots[0] zeroed + Σ_h ww[h] ⊗ add[h], ww (H,S) = alpha·rw + (1−alpha)·one_hot(slots);
// (The content read then runs from Mn's rows: no transposed copy, cpu/content_read_core.h rows_dot.)
template <typename T>
METALEARN_INLINE void write_weights(const T* rw, const T* alpha, const int64_t* slots, int64_t S, int64_t H, T* ww) {
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t s = 0; s < S; ++s) ww[h * S + s] = alpha[h] * rw[h * S + s];
    ww[h * S + slots[h]] += T(1) - alpha[h];
  }
}

template <typename T>
METALEARN_INLINE void write_memory(const T* M, const T* rw, const T* add, const T* alpha, const int64_t* slots,
                                   int64_t S, int64_t H, int64_t W, T* ww, T* Mn) {
  write_weights(rw, alpha, slots, S, H, ww);
  std::copy(M, M + S * W, Mn);
  std::fill(Mn + slots[0] * W, Mn + (slots[0] + 1) * W, T(0));
  gemm_acc(ww, 1, S, S, add, W, H, W, Mn, W);  // Mn (S,W) += wwᵀ (S,H) · add (H,W)
}

template <typename T>
METALEARN_INLINE void forward_range(const Args<T>& a, int64_t b0, int64_t b1) {
  const int64_t S = a.S, H = a.H, W = a.W;
  std::vector<T> scratch(S + 2 * H + H * S);
  std::vector<int64_t> slots(H);
  std::vector<char> taken(S);
  for (int64_t b = b0; b < b1; ++b) {
    const T* u = a.u + b * S;
    least_used(u, S, H, slots.data(), taken.data());
    if (a.slots_out) std::copy(slots.begin(), slots.end(), a.slots_out + b * H);
    T* ww = a.ww + b * H * S;
    T* Mn = a.M_out + b * S * W;
    write_memory(a.M + b * S * W, a.rw + b * H * S, a.add + b * H * W, a.alpha + b * H, slots.data(), S, H, W, ww,
                 Mn);
    T* rw = a.rw_out + b * H * S;
    content_read_one<T>(Mn, a.K + b * H * W, nullptr, S, H, W, T(metalearn_ext::kCosEps), rw,
                        a.reads + b * H * W, scratch.data(), scratch.data() + S, scratch.data() + S + 2 * H);
    T* un = a.u_out + b * S;
    for (int64_t s = 0; s < S; ++s) un[s] = a.gamma * u[s];
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s) un[s] += rw[h * S + s] + ww[h * S + s];
  }
}

template <typename T>
METALEARN_INLINE void backward_range(const Args<T>& a, int64_t b0, int64_t b1) {
  const int64_t S = a.S, H = a.H, W = a.W;
  std::vector<T> scratch(content_read_scratch(S, H, W));
  std::vector<T> Mn(S * W), ww(H * S), gw(H * S);
  std::vector<int64_t> slots(H);
  std::vector<char> taken(S);
  for (int64_t b = b0; b < b1; ++b) {
    const T *rw = a.rw + b * H * S, *add = a.add + b * H * W, *alpha = a.alpha + b * H;
    const T* gu_out = a.gu_out + b * S;
    if (a.slots_in) {
      std::copy(a.slots_in + b * H, a.slots_in + (b + 1) * H, slots.begin());
    } else {
      least_used(a.u + b * S, S, H, slots.data(), taken.data());
    }
    const T* Mnew = Mn.data();
    if (a.M_out_in) {  // the forward's memory': only the write weights are needed again
      write_weights(rw, alpha, slots.data(), S, H, ww.data());
      Mnew = a.M_out_in + b * S * W;
    } else {
      write_memory(a.M + b * S * W, rw, add, alpha, slots.data(), S, H, W, ww.data(), Mn.data());
    }
    // usage' = gamma·usage + Σ_h rw' + Σ_h ww: gu_out reaches rw' and ww of every head.
    const T* grw_out = a.grw_out + b * H * S;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s) gw[h * S + s] = grw_out[h * S + s] + gu_out[s];
    // gM collects the whole gradient of memory' (upstream + content read), then is masked below.
    T* gM = a.gM + b * S * W;
    std::copy(a.gM_out + b * S * W, a.gM_out + (b + 1) * S * W, gM);
    content_read_backward_one<T>(Mnew, a.K + b * H * W, nullptr, gw.data(), a.greads + b * H * W, S,
                                 H, W, T(metalearn_ext::kCosEps), gM, a.gK + b * H * W, nullptr, scratch.data());
    // memory' = keep ⊙ memory + wwᵀ·add.
    const T* gww_out = a.gww + b * H * S;
    T* grw = a.grw + b * H * S;
    // the total upstream of ww (H,S): gww_out + gu_out + add·gMᵀ
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s) gw[h * S + s] = gww_out[h * S + s] + gu_out[s];
    rows_dot(add, H, gM, S, W, gw.data());  // gw (H,S) += add (H,W) · gMᵀ
    T* gadd = a.gadd + b * H * W;
    std::fill(gadd, gadd + H * W, T(0));
    gemm_acc(ww.data(), S, 1, H, gM, W, S, W, gadd, W);  // gadd (H,W) = ww (H,S) · gM (S,W)
    for (int64_t h = 0; h < H; ++h) {
      const T* g = gw.data() + h * S;
      T ga = 0;
      for (int64_t s = 0; s < S; ++s) {
        grw[h * S + s] = alpha[h] * g[s];
        ga += g[s] * rw[h * S + s];
      }
      a.galpha[b * H + h] = ga - g[slots[h]];  // d ww / d alpha = rw − one_hot(slot h)
    }
    std::fill(gM + slots[0] * W, gM + (slots[0] + 1) * W, T(0));
    T* gu = a.gu + b * S;
    for (int64_t s = 0; s < S; ++s) gu[s] = a.gamma * gu_out[s];
  }
}

using RangeFn = void (*)(const Args<float>&, int64_t, int64_t);

void forward_f32(const Args<float>& a, int64_t b0, int64_t b1) { forward_range(a, b0, b1); }
void backward_f32(const Args<float>& a, int64_t b0, int64_t b1) { backward_range(a, b0, b1); }
#if METALEARN_X86_DISPATCH
METALEARN_TARGET_V4 void forward_f32_avx512(const Args<float>& a, int64_t b0, int64_t b1) { forward_range(a, b0, b1); }
METALEARN_TARGET_V4 void backward_f32_avx512(const Args<float>& a, int64_t b0, int64_t b1) {
  backward_range(a, b0, b1);
}
METALEARN_TARGET_V3 void forward_f32_avx2(const Args<float>& a, int64_t b0, int64_t b1) { forward_range(a, b0, b1); }
METALEARN_TARGET_V3 void backward_f32_avx2(const Args<float>& a, int64_t b0, int64_t b1) { backward_range(a, b0, b1); }
#endif

RangeFn pick(bool backward) {
#if METALEARN_X86_DISPATCH
  const int level = x86_level();
  if (level == kIsaAvx512) return backward ? backward_f32_avx512 : forward_f32_avx512;
  if (level == kIsaAvx2) return backward ? backward_f32_avx2 : forward_f32_avx2;
#endif
  return backward ? backward_f32 : forward_f32;
}

}  // namespace

template <typename T>
void metalearn_ext::cpu::mann_step_run(const MannStepArgs<T>& a, int64_t B, bool backward) {
  const int64_t chunks = choose_chunks(B, B * a.H * a.S * a.W * (backward ? 14 : 6));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t b0, b1;
      chunk_rows(B, chunks, c, b0, b1);
      if constexpr (std::is_same_v<T, float>) {
        pick(backward)(a, b0, b1);
      } else if (backward) {
        backward_range(a, b0, b1);
      } else {
        forward_range(a, b0, b1);
      }
    }
  });
}

template void metalearn_ext::cpu::mann_step_run<float>(const MannStepArgs<float>&, int64_t, bool);
template void metalearn_ext::cpu::mann_step_run<double>(const MannStepArgs<double>&, int64_t, bool);

namespace {

void mann_step_forward_cpu(const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights,
                           const at::Tensor& keys, const at::Tensor& add, const at::Tensor& alpha, double gamma,
                           at::Tensor& memory_out, at::Tensor& read_weights_out, at::Tensor& reads,
                           at::Tensor& usage_out, at::Tensor& write_weights) {
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "mann_memory_step", [&] {
    Args<scalar_t> a{};
    a.M = memory.const_data_ptr<scalar_t>();
    a.u = usage.const_data_ptr<scalar_t>();
    a.rw = read_weights.const_data_ptr<scalar_t>();
    a.K = keys.const_data_ptr<scalar_t>();
    a.add = add.const_data_ptr<scalar_t>();
    a.alpha = alpha.const_data_ptr<scalar_t>();
    a.gamma = static_cast<scalar_t>(gamma);
    a.M_out = memory_out.mutable_data_ptr<scalar_t>();
    a.rw_out = read_weights_out.mutable_data_ptr<scalar_t>();
    a.reads = reads.mutable_data_ptr<scalar_t>();
    a.u_out = usage_out.mutable_data_ptr<scalar_t>();
    a.ww = write_weights.mutable_data_ptr<scalar_t>();
    a.S = memory.size(1), a.H = keys.size(1), a.W = memory.size(2);
    mann_step_run(a, memory.size(0), false);
  });
}

void mann_step_backward_cpu(const at::Tensor& grad_memory_out, const at::Tensor& grad_read_weights_out,
                            const at::Tensor& grad_reads, const at::Tensor& grad_usage_out,
                            const at::Tensor& grad_write_weights, const at::Tensor& memory, const at::Tensor& usage,
                            const at::Tensor& read_weights, const at::Tensor& keys, const at::Tensor& add,
                            const at::Tensor& alpha, double gamma, at::Tensor& grad_memory, at::Tensor& grad_usage,
                            at::Tensor& grad_read_weights, at::Tensor& grad_keys, at::Tensor& grad_add,
                            at::Tensor& grad_alpha) {
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "mann_memory_step_backward", [&] {
    Args<scalar_t> a{};
    a.M = memory.const_data_ptr<scalar_t>();
    a.u = usage.const_data_ptr<scalar_t>();
    a.rw = read_weights.const_data_ptr<scalar_t>();
    a.K = keys.const_data_ptr<scalar_t>();
    a.add = add.const_data_ptr<scalar_t>();
    a.alpha = alpha.const_data_ptr<scalar_t>();
    a.gamma = static_cast<scalar_t>(gamma);
    a.gM_out = grad_memory_out.const_data_ptr<scalar_t>();
    a.grw_out = grad_read_weights_out.const_data_ptr<scalar_t>();
    a.greads = grad_reads.const_data_ptr<scalar_t>();
    a.gu_out = grad_usage_out.const_data_ptr<scalar_t>();
    a.gww = grad_write_weights.const_data_ptr<scalar_t>();
    a.gM = grad_memory.mutable_data_ptr<scalar_t>();
    a.gu = grad_usage.mutable_data_ptr<scalar_t>();
    a.grw = grad_read_weights.mutable_data_ptr<scalar_t>();
    a.gK = grad_keys.mutable_data_ptr<scalar_t>();
    a.gadd = grad_add.mutable_data_ptr<scalar_t>();
    a.galpha = grad_alpha.mutable_data_ptr<scalar_t>();
    a.S = memory.size(1), a.H = keys.size(1), a.W = memory.size(2);
    mann_step_run(a, memory.size(0), true);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, CPU, m) {
  m.impl("mann_memory_step", [](const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights,
                                const at::Tensor& keys, const at::Tensor& add, const at::Tensor& alpha, double gamma) {
    return metalearn_ext::mann_memory_step_forward(memory, usage, read_weights, keys, add, alpha, gamma,
                                                   &mann_step_forward_cpu);
  });
  m.impl("mann_memory_step_backward",
         [](const at::Tensor& grad_memory_out, const at::Tensor& grad_read_weights_out, const at::Tensor& grad_reads,
            const at::Tensor& grad_usage_out, const at::Tensor& grad_write_weights, const at::Tensor& memory,
            const at::Tensor& usage, const at::Tensor& read_weights, const at::Tensor& keys, const at::Tensor& add,
            const at::Tensor& alpha, double gamma) {
           return metalearn_ext::mann_memory_step_backward(grad_memory_out, grad_read_weights_out, grad_reads,
                                                           grad_usage_out, grad_write_weights, memory, usage,
                                                           read_weights, keys, add, alpha, gamma,
                                                           &mann_step_backward_cpu);
         });
}
