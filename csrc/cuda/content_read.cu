// CUDA kernels of content_read (specs/memory_np.md §1) behind csrc/content_read.h; the device code is
// csrc/cuda/content_read_kernels.cuh (one block per batch element).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "content_read.h"

#define MANN_DYNAMIC_SHARED(name) extern __shared__ float name[]
#include "cuda/content_read_kernels.cuh"

namespace metalearn_ext {
namespace {

void check_cuda(const at::Tensor& memory, int64_t H, const char* op) {
  TORCH_CHECK_VALUE(memory.is_cuda(), op, " (CUDA): expected CUDA tensors, got device ", memory.device().str());
  TORCH_CHECK_VALUE(memory.scalar_type() == at::kFloat, op, " (CUDA): only float32 is supported, got dtype ",
                    c10::toString(memory.scalar_type()), "; use backend='cpp' or 'reference' for other dtypes");
  const int64_t bytes = memory_smem_bytes(H, memory.size(1), true);
  TORCH_CHECK_VALUE(bytes <= 48 * 1024, op, " (CUDA): S = ", memory.size(1), " and H = ", H, " need ", bytes,
                    " bytes of shared memory per block, more than 48 KiB; use backend='triton' or 'reference'");
}

void forward_cuda(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta, at::Tensor& weights,
                  at::Tensor& reads) {
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  check_cuda(memory, H, "content_read");
  const c10::cuda::CUDAGuard guard(memory.device());
  content_read_forward_kernel<<<static_cast<unsigned>(B), kMemThreads, memory_smem_bytes(H, S, false),
                                at::cuda::getCurrentCUDAStream()>>>(
      memory.data_ptr<float>(), keys.data_ptr<float>(), beta.defined() ? beta.data_ptr<float>() : nullptr,
      weights.data_ptr<float>(), reads.data_ptr<float>(), H, S, W, static_cast<float>(kCosEps));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void backward_cuda(const at::Tensor& grad_weights, const at::Tensor& grad_reads, const at::Tensor& memory,
                   const at::Tensor& keys, const at::Tensor& beta, at::Tensor& grad_memory, at::Tensor& grad_keys,
                   at::Tensor& grad_beta) {
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  check_cuda(memory, H, "content_read_backward");
  const c10::cuda::CUDAGuard guard(memory.device());
  auto scratch = at::empty({3, B, H, S}, memory.options());
  content_read_backward_kernel<<<static_cast<unsigned>(B), kMemThreads, memory_smem_bytes(H, S, false),
                                 at::cuda::getCurrentCUDAStream()>>>(
      grad_weights.data_ptr<float>(), grad_reads.data_ptr<float>(), memory.data_ptr<float>(), keys.data_ptr<float>(),
      beta.defined() ? beta.data_ptr<float>() : nullptr, grad_memory.data_ptr<float>(), grad_keys.data_ptr<float>(),
      grad_beta.defined() ? grad_beta.data_ptr<float>() : nullptr, scratch.data_ptr<float>(), B, H, S, W,
      static_cast<float>(kCosEps));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace metalearn_ext

TORCH_LIBRARY_IMPL(metalearn_ext, CUDA, m) {
  m.impl("content_read", [](const at::Tensor& memory, const at::Tensor& keys, const std::optional<at::Tensor>& beta) {
    return metalearn_ext::content_read_forward(memory, keys, beta, &metalearn_ext::forward_cuda);
  });
  m.impl("content_read_backward",
         [](const at::Tensor& grad_weights, const at::Tensor& grad_reads, const at::Tensor& memory,
            const at::Tensor& keys, const std::optional<at::Tensor>& beta) {
           return metalearn_ext::content_read_backward(grad_weights, grad_reads, memory, keys, beta,
                                                       &metalearn_ext::backward_cuda);
         });
}
