#include "content_read.h"

#include "checks.h"

namespace metalearn_ext {

std::string python_dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(t);
  }
}

void check_like(const char* op, const char* like_name, const at::Tensor& like,
                std::initializer_list<std::pair<const char*, const at::Tensor*>> others) {
  TORCH_CHECK_VALUE(at::isFloatingType(like.scalar_type()), op, ": ", like_name,
                    " must be a floating-point tensor, got ", python_dtype_name(like.scalar_type()));
  for (const auto& [name, t] : others) {
    TORCH_CHECK_VALUE(t->scalar_type() == like.scalar_type(), op, ": ", name, " must be of dtype ",
                      python_dtype_name(like.scalar_type()), " like ", like_name, ", got ",
                      python_dtype_name(t->scalar_type()));
    TORCH_CHECK_VALUE(t->device() == like.device(), op, ": ", name, " must be on device ", like.device().str(),
                      " like ", like_name, ", got ", t->device().str());
  }
  // The kernels are instantiated for these two; the Python side accepts any float for the reference.
  check_floating(like, op, like_name);
}

void check_content_read_args(const at::Tensor& memory, const at::Tensor& keys, const std::optional<at::Tensor>& beta,
                             const char* op) {
  METALEARN_CHECK_ARG(memory.dim() == 3 && memory.numel() > 0, op, "memory",
                      "a non-empty tensor of shape (B, S, W)", shape_str(memory.sizes()));
  const int64_t B = memory.size(0), W = memory.size(2);
  METALEARN_CHECK_ARG(keys.dim() == 3 && keys.size(0) == B && keys.size(2) == W && keys.size(1) >= 1, op, "keys",
                      "of shape (B, H, W) = (" + std::to_string(B) + ", H, " + std::to_string(W) +
                          ") (B, W from memory)",
                      shape_str(keys.sizes()));
  const int64_t H = keys.size(1);
  if (beta.has_value()) {
    METALEARN_CHECK_ARG(beta->sizes() == at::IntArrayRef({B, H}), op, "beta",
                        "None or of shape (B, H) = " + shape_str({B, H}) + " (H from keys)", shape_str(beta->sizes()));
    check_like(op, "memory", memory, {{"keys", &keys}, {"beta", &*beta}});
  } else {
    check_like(op, "memory", memory, {{"keys", &keys}});
  }
}

std::tuple<at::Tensor, at::Tensor> content_read_forward(const at::Tensor& memory, const at::Tensor& keys,
                                                        const std::optional<at::Tensor>& beta,
                                                        ContentReadForwardKernel kernel) {
  check_content_read_args(memory, keys, beta, "content_read");
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  auto weights = at::empty({B, H, S}, memory.options());
  auto reads = at::empty({B, H, W}, memory.options());
  const at::Tensor beta_c = beta.has_value() ? beta->contiguous() : at::Tensor();
  kernel(memory.contiguous(), keys.contiguous(), beta_c, weights, reads);
  return {weights, reads};
}

std::vector<at::Tensor> content_read_backward(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                              const at::Tensor& memory, const at::Tensor& keys,
                                              const std::optional<at::Tensor>& beta,
                                              ContentReadBackwardKernel kernel) {
  const char* op = "content_read_backward";
  check_content_read_args(memory, keys, beta, op);
  const int64_t B = memory.size(0), S = memory.size(1), W = memory.size(2), H = keys.size(1);
  METALEARN_CHECK_ARG(grad_weights.sizes() == at::IntArrayRef({B, H, S}), op, "grad_weights",
                      "of shape (B, H, S) = " + shape_str({B, H, S}), shape_str(grad_weights.sizes()));
  METALEARN_CHECK_ARG(grad_reads.sizes() == at::IntArrayRef({B, H, W}), op, "grad_reads",
                      "of shape (B, H, W) = " + shape_str({B, H, W}), shape_str(grad_reads.sizes()));
  check_like(op, "memory", memory, {{"grad_weights", &grad_weights}, {"grad_reads", &grad_reads}});
  auto grad_memory = at::empty({B, S, W}, memory.options());
  auto grad_keys = at::empty({B, H, W}, memory.options());
  at::Tensor grad_beta = beta.has_value() ? at::empty({B, H}, memory.options()) : at::Tensor();
  const at::Tensor beta_c = beta.has_value() ? beta->contiguous() : at::Tensor();
  kernel(grad_weights.contiguous(), grad_reads.contiguous(), memory.contiguous(), keys.contiguous(), beta_c,
         grad_memory, grad_keys, grad_beta);
  if (beta.has_value()) return {grad_memory, grad_keys, grad_beta};
  return {grad_memory, grad_keys};
}

}  // namespace metalearn_ext
