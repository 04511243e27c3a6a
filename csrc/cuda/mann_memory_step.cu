// CUDA kernels of mann_memory_step (specs/memory_np.md §1) behind csrc/mann_memory_step.h; the device code
// is csrc/cuda/content_read_kernels.cuh (one block per batch element, the whole step fused). A step
// allocates nothing but its outputs (and the backward's scratch), so an episode's forward can be captured
// in a CUDA graph.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "content_read.h"
#include "mann_memory_step.h"

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

void forward_cuda(const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights,
                  const at::Tensor& keys, const at::Tensor& add, const at::Tensor& alpha, double gamma,
                  at::Tensor& memory_out, at::Tensor& read_weights_out, at::Tensor& reads, at::Tensor& usage_out,
                  at::Tensor& write_weights) {
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  check_cuda(memory, H, "mann_memory_step");
  const c10::cuda::CUDAGuard guard(memory.device());
  mann_step_forward_kernel<<<static_cast<unsigned>(B), kMemThreads, memory_smem_bytes(H, S, true),
                             at::cuda::getCurrentCUDAStream()>>>(
      memory.data_ptr<float>(), usage.data_ptr<float>(), read_weights.data_ptr<float>(), keys.data_ptr<float>(),
      add.data_ptr<float>(), alpha.data_ptr<float>(), static_cast<float>(gamma), memory_out.data_ptr<float>(),
      read_weights_out.data_ptr<float>(), reads.data_ptr<float>(), usage_out.data_ptr<float>(),
      write_weights.data_ptr<float>(), H, S, W, static_cast<float>(kCosEps));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void backward_cuda(const at::Tensor& grad_memory_out, const at::Tensor& grad_read_weights_out,
                   const at::Tensor& grad_reads, const at::Tensor& grad_usage_out,
                   const at::Tensor& grad_write_weights, const at::Tensor& memory, const at::Tensor& usage,
                   const at::Tensor& read_weights, const at::Tensor& keys, const at::Tensor& add,
                   const at::Tensor& alpha, double gamma, at::Tensor& grad_memory, at::Tensor& grad_usage,
                   at::Tensor& grad_read_weights, at::Tensor& grad_keys, at::Tensor& grad_add, at::Tensor& grad_alpha) {
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  check_cuda(memory, H, "mann_memory_step_backward");
  const c10::cuda::CUDAGuard guard(memory.device());
  auto scratch = at::empty({5 * B * H * S + B * S * W}, memory.options());
  mann_step_backward_kernel<<<static_cast<unsigned>(B), kMemThreads, memory_smem_bytes(H, S, true),
                              at::cuda::getCurrentCUDAStream()>>>(
      grad_memory_out.data_ptr<float>(), grad_read_weights_out.data_ptr<float>(), grad_reads.data_ptr<float>(),
      grad_usage_out.data_ptr<float>(), grad_write_weights.data_ptr<float>(), memory.data_ptr<float>(),
      usage.data_ptr<float>(), read_weights.data_ptr<float>(), keys.data_ptr<float>(), add.data_ptr<float>(),
      alpha.data_ptr<float>(), static_cast<float>(gamma), grad_memory.data_ptr<float>(), grad_usage.data_ptr<float>(),
      grad_read_weights.data_ptr<float>(), grad_keys.data_ptr<float>(), grad_add.data_ptr<float>(),
      grad_alpha.data_ptr<float>(), scratch.data_ptr<float>(), B, H, S, W, static_cast<float>(kCosEps));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace metalearn_ext

TORCH_LIBRARY_IMPL(metalearn_ext, CUDA, m) {
  m.impl("mann_memory_step", [](const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights,
                                const at::Tensor& keys, const at::Tensor& add, const at::Tensor& alpha, double gamma) {
    return metalearn_ext::mann_memory_step_forward(memory, usage, read_weights, keys, add, alpha, gamma,
                                                   &metalearn_ext::forward_cuda);
  });
  m.impl("mann_memory_step_backward",
         [](const at::Tensor& grad_memory_out, const at::Tensor& grad_read_weights_out, const at::Tensor& grad_reads,
            const at::Tensor& grad_usage_out, const at::Tensor& grad_write_weights, const at::Tensor& memory,
            const at::Tensor& usage, const at::Tensor& read_weights, const at::Tensor& keys, const at::Tensor& add,
            const at::Tensor& alpha, double gamma) {
           return metalearn_ext::mann_memory_step_backward(grad_memory_out, grad_read_weights_out, grad_reads,
                                                           grad_usage_out, grad_write_weights, memory, usage,
                                                           read_weights, keys, add, alpha, gamma,
                                                           &metalearn_ext::backward_cuda);
         });
}
