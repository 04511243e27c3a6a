// The VSML step (specs/vsml.md §1): argument checks, message projections and the backward epilogue,
// shared by the CPU and CUDA implementations. A device supplies only the two per-synapse kernels.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace metalearn_ext {

// Forward core. Inputs are contiguous, one dtype, one device:
//   h, c (T,A,B,N) initial state; row (T,A,4N) = W_fwd fwd_in + bias; col (T,B,4N) = W_bwd bwd_in;
//   w_h (Tw,4N,N) with Tw = 1 (shared) or T (per copy).
// Outputs (allocated by the caller, contents undefined): h_out, c_out (T,A,B,N) after `ticks` ticks,
//   fwd_mean (T,B,N) = mean over a of h_out, bwd_mean (T,A,N) = mean over b of h_out.
using VsmlForwardKernel = void (*)(const at::Tensor& h, const at::Tensor& c, const at::Tensor& row,
                                   const at::Tensor& col, const at::Tensor& w_h, int64_t ticks, at::Tensor& h_out,
                                   at::Tensor& c_out, at::Tensor& fwd_mean, at::Tensor& bwd_mean);

// Backward core, recomputing the ticks from the initial state. Upstream gradients grad_h, grad_c
// (T,A,B,N), grad_fwd_mean (T,B,N), grad_bwd_mean (T,A,N); the rest as in the forward core.
// Outputs: grad_h0, grad_c0 (T,A,B,N) (contents undefined on entry); and, zero on entry,
//   g_row (T,A,4N) += sum over b and ticks of dz;  g_col (T,B,4N) += sum over a and ticks of dz;
//   g_wh (T,4N,N) += sum over a, b and ticks k of dz_k (outer) h_{k-1}   (dz: gate pre-activation grads).
using VsmlBackwardKernel = void (*)(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                    const at::Tensor& grad_fwd_mean, const at::Tensor& grad_bwd_mean,
                                    const at::Tensor& h, const at::Tensor& c, const at::Tensor& row,
                                    const at::Tensor& col, const at::Tensor& w_h, int64_t ticks,
                                    at::Tensor& grad_h0, at::Tensor& grad_c0, at::Tensor& g_row, at::Tensor& g_col,
                                    at::Tensor& g_wh);

// Validates every argument of vsml_step; throws ValueError naming the argument and the expected shape.
void check_vsml_step_args(const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in, const at::Tensor& bwd_in,
                          const at::Tensor& weight, const at::Tensor& bias, int64_t ticks, const char* op);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vsml_step_forward(
    const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in, const at::Tensor& bwd_in,
    const at::Tensor& weight, const at::Tensor& bias, int64_t ticks, VsmlForwardKernel kernel);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> vsml_step_backward(
    const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_fwd_mean,
    const at::Tensor& grad_bwd_mean, const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in,
    const at::Tensor& bwd_in, const at::Tensor& weight, const at::Tensor& bias, int64_t ticks,
    VsmlBackwardKernel kernel);

}  // namespace metalearn_ext
