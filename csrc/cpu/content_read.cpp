// CPU kernels of metalearn_ext::content_read (specs/memory_np.md §1) behind csrc/content_read.h.
//
// One call per batch element b, all H heads (cpu/content_read_core.h): norms, cosines (straight from the
// memory's rows, no transposed copy), softmax and the weighted read run fused while the memory (S, W)
// sits in L1/L2. at::parallel_for splits the batch into contiguous ranges; each b is independent, so results
// do not depend on the thread count. float runs builds for AVX-512 / AVX2+FMA / the baseline, picked
// at run time (cpu/isa_dispatch.h); double runs the baseline build.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "content_read.h"
#include "cpu/content_read_core.h"
#include "cpu/isa_dispatch.h"
#include "cpu/parallel.h"

namespace {

using namespace metalearn_ext::cpu;

template <typename T>
struct Args {
  const T *M, *K, *beta, *gW, *gR;
  T *weights, *reads, *gM, *gK, *gbeta;
  int64_t S, H, W;
};

template <typename T>
METALEARN_INLINE void forward_range(const Args<T>& a, int64_t b0, int64_t b1) {
  const int64_t S = a.S, H = a.H, W = a.W;
  std::vector<T> scratch(S + H + H * S);
  for (int64_t b = b0; b < b1; ++b) {
    content_read_one<T>(a.M + b * S * W, a.K + b * H * W, a.beta ? a.beta + b * H : nullptr, S, H, W,
                        T(metalearn_ext::kCosEps), a.weights + b * H * S, a.reads + b * H * W, scratch.data(),
                        scratch.data() + S, scratch.data() + S + H);
  }
}

template <typename T>
METALEARN_INLINE void backward_range(const Args<T>& a, int64_t b0, int64_t b1) {
  const int64_t S = a.S, H = a.H, W = a.W;
  std::vector<T> scratch(content_read_scratch(S, H, W));
  for (int64_t b = b0; b < b1; ++b) {
    const T* M = a.M + b * S * W;
    T* gM = a.gM + b * S * W;
    std::fill(gM, gM + S * W, T(0));
    content_read_backward_one<T>(M, a.K + b * H * W, a.beta ? a.beta + b * H : nullptr, a.gW + b * H * S,
                                 a.gR + b * H * W, S, H, W, T(metalearn_ext::kCosEps), gM, a.gK + b * H * W,
                                 a.gbeta ? a.gbeta + b * H : nullptr, scratch.data());
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

template <typename T>
void run(const Args<T>& a, int64_t B, bool backward) {
  const int64_t chunks = choose_chunks(B, B * a.H * a.S * a.W * (backward ? 10 : 4));
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

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

void content_read_forward_cpu(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                              at::Tensor& weights, at::Tensor& reads) {
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "content_read", [&] {
    Args<scalar_t> a{};
    a.M = memory.const_data_ptr<scalar_t>();
    a.K = keys.const_data_ptr<scalar_t>();
    a.beta = ptr_or_null<scalar_t>(beta);
    a.weights = weights.mutable_data_ptr<scalar_t>();
    a.reads = reads.mutable_data_ptr<scalar_t>();
    a.S = memory.size(1), a.H = keys.size(1), a.W = memory.size(2);
    run(a, memory.size(0), false);
  });
}

void content_read_backward_cpu(const at::Tensor& grad_weights, const at::Tensor& grad_reads, const at::Tensor& memory,
                               const at::Tensor& keys, const at::Tensor& beta, at::Tensor& grad_memory,
                               at::Tensor& grad_keys, at::Tensor& grad_beta) {
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "content_read_backward", [&] {
    Args<scalar_t> a{};
    a.M = memory.const_data_ptr<scalar_t>();
    a.K = keys.const_data_ptr<scalar_t>();
    a.beta = ptr_or_null<scalar_t>(beta);
    a.gW = grad_weights.const_data_ptr<scalar_t>();
    a.gR = grad_reads.const_data_ptr<scalar_t>();
    a.gM = grad_memory.mutable_data_ptr<scalar_t>();
    a.gK = grad_keys.mutable_data_ptr<scalar_t>();
    a.gbeta = grad_beta.defined() ? grad_beta.mutable_data_ptr<scalar_t>() : nullptr;
    a.S = memory.size(1), a.H = keys.size(1), a.W = memory.size(2);
    run(a, memory.size(0), true);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, CPU, m) {
  m.impl("content_read", [](const at::Tensor& memory, const at::Tensor& keys, const std::optional<at::Tensor>& beta) {
    return metalearn_ext::content_read_forward(memory, keys, beta, &content_read_forward_cpu);
  });
  m.impl("content_read_backward",
         [](const at::Tensor& grad_weights, const at::Tensor& grad_reads, const at::Tensor& memory,
            const at::Tensor& keys, const std::optional<at::Tensor>& beta) {
           return metalearn_ext::content_read_backward(grad_weights, grad_reads, memory, keys, beta,
                                                       &content_read_backward_cpu);
         });
}
