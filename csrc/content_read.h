// Content addressing of a memory (specs/memory_np.md §1): argument checks and the host side of
// content_read and its backward, shared by the CPU and CUDA implementations. A device supplies only
// the two kernels below; the host side validates, makes inputs contiguous and allocates outputs.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace metalearn_ext {

// Added to each squared norm, as COS_EPS in metalearn_ext/ops/content_read/reference.py: a zero memory
// row or key has cosine 0, never NaN.
constexpr double kCosEps = 1e-8;

// Forward core. memory (B,S,W), keys (B,H,W) contiguous, one dtype and device; beta (B,H) contiguous,
// or undefined for 1. Outputs (allocated, contents undefined): weights (B,H,S), reads (B,H,W).
using ContentReadForwardKernel = void (*)(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                                          at::Tensor& weights, at::Tensor& reads);

// Backward core, recomputing the forward from its inputs. grad_weights (B,H,S), grad_reads (B,H,W)
// contiguous. Outputs (allocated, contents undefined): grad_memory (B,S,W), grad_keys (B,H,W), and
// grad_beta (B,H) when beta is defined (else undefined and untouched).
using ContentReadBackwardKernel = void (*)(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                           const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                                           at::Tensor& grad_memory, at::Tensor& grad_keys, at::Tensor& grad_beta);

// "torch.float32": dtypes spelled as Python prints them, so C++ and Python errors read alike.
std::string python_dtype_name(at::ScalarType t);

// Every tensor of `others` has like's dtype and device (ValueError naming it otherwise); `like` is a
// floating-point tensor the kernels compute in (float32 or float64).
void check_like(const char* op, const char* like_name, const at::Tensor& like,
                std::initializer_list<std::pair<const char*, const at::Tensor*>> others);

// Validates content_read's arguments with the messages of ops/content_read/shapes.py.
void check_content_read_args(const at::Tensor& memory, const at::Tensor& keys, const std::optional<at::Tensor>& beta,
                             const char* op);

std::tuple<at::Tensor, at::Tensor> content_read_forward(const at::Tensor& memory, const at::Tensor& keys,
                                                        const std::optional<at::Tensor>& beta,
                                                        ContentReadForwardKernel kernel);

// [grad_memory, grad_keys] and, when beta is given, grad_beta: one gradient per tensor input.
std::vector<at::Tensor> content_read_backward(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                              const at::Tensor& memory, const at::Tensor& keys,
                                              const std::optional<at::Tensor>& beta,
                                              ContentReadBackwardKernel kernel);

}  // namespace metalearn_ext
