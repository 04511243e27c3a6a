// One LRUA memory step of MANN (specs/memory_np.md §1): argument checks and the host side of
// mann_memory_step and its backward, shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace metalearn_ext {

// Forward core. memory (B,S,W), usage (B,S), read_weights (B,H,S), keys, add (B,H,W), alpha (B,H): all
// contiguous, one dtype and device. Outputs (allocated, contents undefined): memory_out (B,S,W),
// read_weights_out (B,H,S), reads (B,H,W), usage_out (B,S), write_weights (B,H,S).
using MannStepForwardKernel = void (*)(const at::Tensor& memory, const at::Tensor& usage,
                                       const at::Tensor& read_weights, const at::Tensor& keys, const at::Tensor& add,
                                       const at::Tensor& alpha, double gamma, at::Tensor& memory_out,
                                       at::Tensor& read_weights_out, at::Tensor& reads, at::Tensor& usage_out,
                                       at::Tensor& write_weights);

// Backward core, recomputing the step from its inputs; the five upstream gradients are shaped like the
// five outputs and contiguous. Outputs (allocated, contents undefined): one gradient per tensor input,
// shaped like it. No gradient flows through the choice of the least-used slots.
using MannStepBackwardKernel = void (*)(const at::Tensor& grad_memory_out, const at::Tensor& grad_read_weights_out,
                                        const at::Tensor& grad_reads, const at::Tensor& grad_usage_out,
                                        const at::Tensor& grad_write_weights, const at::Tensor& memory,
                                        const at::Tensor& usage, const at::Tensor& read_weights,
                                        const at::Tensor& keys, const at::Tensor& add, const at::Tensor& alpha,
                                        double gamma, at::Tensor& grad_memory, at::Tensor& grad_usage,
                                        at::Tensor& grad_read_weights, at::Tensor& grad_keys, at::Tensor& grad_add,
                                        at::Tensor& grad_alpha);

// Validates mann_memory_step's arguments with the messages of ops/mann_memory_step/shapes.py.
void check_mann_memory_step_args(const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights,
                                 const at::Tensor& keys, const at::Tensor& add, const at::Tensor& alpha, double gamma,
                                 const char* op);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mann_memory_step_forward(
    const at::Tensor& memory, const at::Tensor& usage, const at::Tensor& read_weights, const at::Tensor& keys,
    const at::Tensor& add, const at::Tensor& alpha, double gamma, MannStepForwardKernel kernel);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mann_memory_step_backward(
    const at::Tensor& grad_memory_out, const at::Tensor& grad_read_weights_out, const at::Tensor& grad_reads,
    const at::Tensor& grad_usage_out, const at::Tensor& grad_write_weights, const at::Tensor& memory,
    const at::Tensor& usage, const at::Tensor& read_weights, const at::Tensor& keys, const at::Tensor& add,
    const at::Tensor& alpha, double gamma, MannStepBackwardKernel kernel);

}  // namespace metalearn_ext
