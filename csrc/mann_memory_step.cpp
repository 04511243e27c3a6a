#include "mann_memory_step.h"

#include <cmath>

#include "checks.h"
#include "content_read.h"

namespace metalearn_ext {

void check_mann_memory_step_args(const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights,
                                 const at::Tensor& keys, const at::Tensor& add, const at::Tensor& alpha, double gamma,
                                 const char* op) {
  METALEARN_CHECK_ARG(memory.dim() == 3 && memory.numel() > 0, op, "memory",
                      "a non-empty tensor of shape (B, S, W)", shape_str(memory.sizes()));
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2);
  METALEARN_CHECK_ARG(keys.dim() == 3 && keys.size(0) == B && keys.size(2) == W && keys.size(1) >= 1 &&
                          keys.size(1) <= S,
                      op, "keys",
                      "of shape (B, H, W) = (" + std::to_string(B) + ", H, " + std::to_string(W) +
                          ") with 1 <= H <= S = " + std::to_string(S) + " (B, S, W from memory)",
                      shape_str(keys.sizes()));
  const int64_t H = keys.size(1);
  METALEARN_CHECK_ARG(usage.sizes() == at::IntArrayRef({B, S}), op, "usage", "of shape (B, S) = " + shape_str({B, S}),
                      shape_str(usage.sizes()));
  METALEARN_CHECK_ARG(read_weights.sizes() == at::IntArrayRef({B, H, S}), op, "read_weights",
                      "of shape (B, H, S) = " + shape_str({B, H, S}), shape_str(read_weights.sizes()));
  METALEARN_CHECK_ARG(add.sizes() == at::IntArrayRef({B, H, W}), op, "add", "of shape (B, H, W) = " + shape_str({B, H, W}),
                      shape_str(add.sizes()));
  METALEARN_CHECK_ARG(alpha.sizes() == at::IntArrayRef({B, H}), op, "alpha", "of shape (B, H) = " + shape_str({B, H}),
                      shape_str(alpha.sizes()));
  TORCH_CHECK_VALUE(std::isfinite(gamma), op, ": gamma must be a finite float, got ", gamma);
  check_like(op, "memory", memory,
             {{"usage", &usage}, {"read_weights", &read_weights}, {"keys", &keys}, {"add", &add}, {"alpha", &alpha}});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mann_memory_step_forward(
    const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights, const at::Tensor& keys,
    const at::Tensor& add, const at::Tensor& alpha, double gamma, MannStepForwardKernel kernel) {
  check_mann_memory_step_args(memory, usage, read_weights, keys, add, alpha, gamma, "mann_memory_step");
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  const auto opt = memory.options();
  auto memory_out = at::empty({B, S, W}, opt);
  auto read_weights_out = at::empty({B, H, S}, opt);
  auto reads = at::empty({B, H, W}, opt);
  auto usage_out = at::empty({B, S}, opt);
  auto write_weights = at::empty({B, H, S}, opt);
  kernel(memory.contiguous(), usage.contiguous(), read_weights.contiguous(), keys.contiguous(), add.contiguous(),
         alpha.contiguous(), gamma, memory_out, read_weights_out, reads, usage_out, write_weights);
  return {memory_out, read_weights_out, reads, usage_out, write_weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mann_memory_step_backward(
    const at::Tensor& grad_memory_out, const at::Tensor& grad_read_weights_out, const at::Tensor& grad_reads,
    const at::Tensor& grad_usage_out, const at::Tensor& grad_write_weights, const at::Tensor& memory,
    const at::Tensor& usage, const at::Tensor& read_weights, const at::Tensor& keys, const at::Tensor& add,
    const at::Tensor& alpha, double gamma, MannStepBackwardKernel kernel) {
  const char* op = "mann_memory_step_backward";
  check_mann_memory_step_args(memory, usage, read_weights, keys, add, alpha, gamma, op);
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  METALEARN_CHECK_ARG(grad_memory_out.sizes() == memory.sizes(), op, "grad_memory_out",
                      "of shape (B, S, W) = " + shape_str({B, S, W}), shape_str(grad_memory_out.sizes()));
  METALEARN_CHECK_ARG(grad_read_weights_out.sizes() == at::IntArrayRef({B, H, S}), op, "grad_read_weights_out",
                      "of shape (B, H, S) = " + shape_str({B, H, S}), shape_str(grad_read_weights_out.sizes()));
  METALEARN_CHECK_ARG(grad_reads.sizes() == at::IntArrayRef({B, H, W}), op, "grad_reads",
                      "of shape (B, H, W) = " + shape_str({B, H, W}), shape_str(grad_reads.sizes()));
  METALEARN_CHECK_ARG(grad_usage_out.sizes() == at::IntArrayRef({B, S}), op, "grad_usage_out",
                      "of shape (B, S) = " + shape_str({B, S}), shape_str(grad_usage_out.sizes()));
  METALEARN_CHECK_ARG(grad_write_weights.sizes() == at::IntArrayRef({B, H, S}), op, "grad_write_weights",
                      "of shape (B, H, S) = " + shape_str({B, H, S}), shape_str(grad_write_weights.sizes()));
  check_like(op, "memory", memory,
             {{"grad_memory_out", &grad_memory_out}, {"grad_read_weights_out", &grad_read_weights_out},
              {"grad_reads", &grad_reads}, {"grad_usage_out", &grad_usage_out},
              {"grad_write_weights", &grad_write_weights}});
  const auto opt = memory.options();
  auto grad_memory = at::empty({B, S, W}, opt);
  auto grad_usage = at::empty({B, S}, opt);
  auto grad_read_weights = at::empty({B, H, S}, opt);
  auto grad_keys = at::empty({B, H, W}, opt);
  auto grad_add = at::empty({B, H, W}, opt);
  auto grad_alpha = at::empty({B, H}, opt);
  kernel(grad_memory_out.contiguous(), grad_read_weights_out.contiguous(), grad_reads.contiguous(),
         grad_usage_out.contiguous(), grad_write_weights.contiguous(), memory.contiguous(), usage.contiguous(),
         read_weights.contiguous(), keys.contiguous(), add.contiguous(), alpha.contiguous(), gamma, grad_memory,
         grad_usage, grad_read_weights, grad_keys, grad_add, grad_alpha);
  return {grad_memory, grad_usage, grad_read_weights, grad_keys, grad_add, grad_alpha};
}

}  // namespace metalearn_ext
