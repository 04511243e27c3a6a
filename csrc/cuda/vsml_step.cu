// Fused CUDA kernels of vsml_step (specs/vsml.md §1): the per-synapse cores behind csrc/vsml_step.h.
//
// Thread mapping (forward and backward): one thread per (synapse, state unit j). The N threads of a
// synapse are adjacent lanes of one warp (N divides 32), so the full h vector a tick needs is exchanged
// through a per-synapse shared-memory row with __syncwarp only. Thread j owns the four gate rows
// i_j, f_j, g_j, o_j of W_h (4N floats, kept in registers), so all gate arithmetic of unit j is local
// and h, c, grad_h, ... are read and written fully coalesced, once per step.
//
// A block works on one copy t and a contiguous range ("tile") of the A*B synapses of that copy, P
// synapses per pass. The means (forward) and the message gradients g_row / g_col (backward) are summed
// per tile in shared memory, then added to global memory with one atomicAdd per element and tile.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>

#include "vsml_step.h"

#define VSML_DYNAMIC_SHARED(name) extern __shared__ float4 name[]
#include "cuda/vsml_step_kernels.cuh"

namespace metalearn_ext {
namespace {

void check_cuda_inputs(const at::Tensor& h, const char* op) {
  TORCH_CHECK_VALUE(h.is_cuda(), op, " (CUDA): expected CUDA tensors, got device ", h.device().str());
  TORCH_CHECK_VALUE(h.scalar_type() == at::kFloat, op, " (CUDA): only float32 is supported, got dtype ",
                    c10::toString(h.scalar_type()), "; use backend='cpp' or 'reference' for other dtypes");
  const int64_t N = h.size(3);
  TORCH_CHECK_VALUE(N == 8 || N == 16 || N == 32, op, " (CUDA): the state size N = h.size(3) must be 8, 16 or 32, ",
                    "got ", N, "; use backend='cpp', 'triton' or 'reference' for other N");
}

// W_h rows are read as float4.
at::Tensor aligned_w_h(const at::Tensor& w_h) {
  return reinterpret_cast<uintptr_t>(w_h.data_ptr()) % 16 == 0 ? w_h : w_h.clone(at::MemoryFormat::Contiguous);
}

template <typename Kernel>
void set_smem_limit(Kernel kernel, size_t bytes, const char* op) {
  const size_t optin = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  TORCH_CHECK(bytes <= optin, op, " (CUDA): needs ", bytes, " bytes of shared memory per block, the device has ",
              optin);
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

int64_t sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

template <int N>
void launch_forward(const at::Tensor& h, const at::Tensor& c, const at::Tensor& row, const at::Tensor& col,
                    const at::Tensor& w_h, int64_t ticks, at::Tensor& h_out, at::Tensor& c_out, at::Tensor& fwd_mean,
                    at::Tensor& bwd_mean) {
  constexpr int P = kForwardThreads / N;
  const int64_t T = h.size(0), A = h.size(1), B = h.size(2);
  const Geometry geo = make_geometry<P>(T, A, B, ticks, w_h.size(0) != 1, kForwardMaxPasses, 8 * sm_count(),
                                        "vsml_step");
  const size_t smem = forward_smem_bytes<N>(geo);
  set_smem_limit(vsml_forward_kernel<N>, smem, "vsml_step");
  const at::Tensor w = aligned_w_h(w_h);
  vsml_forward_kernel<N><<<static_cast<unsigned>(T * geo.tiles_per_t), kForwardThreads, smem,
                           at::cuda::getCurrentCUDAStream()>>>(
      h.data_ptr<float>(), c.data_ptr<float>(), row.data_ptr<float>(), col.data_ptr<float>(), w.data_ptr<float>(),
      h_out.data_ptr<float>(), c_out.data_ptr<float>(), fwd_mean.data_ptr<float>(), bwd_mean.data_ptr<float>(), geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int N>
void launch_backward(const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_fwd_mean,
                     const at::Tensor& grad_bwd_mean, const at::Tensor& h, const at::Tensor& c, const at::Tensor& row,
                     const at::Tensor& col, const at::Tensor& w_h, int64_t ticks, at::Tensor& grad_h0,
                     at::Tensor& grad_c0, at::Tensor& g_row, at::Tensor& g_col, at::Tensor& g_wh) {
  constexpr int P = kBackwardThreads / N;
  const int64_t T = h.size(0), A = h.size(1), B = h.size(2);
  const Geometry geo = make_geometry<P>(T, A, B, ticks, w_h.size(0) != 1, kBackwardMaxPasses, 4 * sm_count(),
                                        "vsml_step_backward");
  const size_t smem = backward_smem_bytes<N>(geo);
  set_smem_limit(vsml_backward_kernel<N>, smem, "vsml_step_backward");
  const at::Tensor w = aligned_w_h(w_h);
  vsml_backward_kernel<N><<<static_cast<unsigned>(T * geo.tiles_per_t), kBackwardThreads, smem,
                            at::cuda::getCurrentCUDAStream()>>>(
      grad_h.data_ptr<float>(), grad_c.data_ptr<float>(), grad_fwd_mean.data_ptr<float>(),
      grad_bwd_mean.data_ptr<float>(), h.data_ptr<float>(), c.data_ptr<float>(), row.data_ptr<float>(),
      col.data_ptr<float>(), w.data_ptr<float>(), grad_h0.data_ptr<float>(), grad_c0.data_ptr<float>(),
      g_row.data_ptr<float>(), g_col.data_ptr<float>(), g_wh.data_ptr<float>(), geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void vsml_forward_cuda(const at::Tensor& h, const at::Tensor& c, const at::Tensor& row, const at::Tensor& col,
                       const at::Tensor& w_h, int64_t ticks, at::Tensor& h_out, at::Tensor& c_out,
                       at::Tensor& fwd_mean, at::Tensor& bwd_mean) {
  check_cuda_inputs(h, "vsml_step");
  const c10::cuda::CUDAGuard guard(h.device());
  // The means are sums of per-tile partials.
  fwd_mean.zero_();
  bwd_mean.zero_();
  switch (h.size(3)) {
    case 8: launch_forward<8>(h, c, row, col, w_h, ticks, h_out, c_out, fwd_mean, bwd_mean); break;
    case 16: launch_forward<16>(h, c, row, col, w_h, ticks, h_out, c_out, fwd_mean, bwd_mean); break;
    default: launch_forward<32>(h, c, row, col, w_h, ticks, h_out, c_out, fwd_mean, bwd_mean); break;
  }
}

void vsml_backward_cuda(const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_fwd_mean,
                        const at::Tensor& grad_bwd_mean, const at::Tensor& h, const at::Tensor& c,
                        const at::Tensor& row, const at::Tensor& col, const at::Tensor& w_h, int64_t ticks,
                        at::Tensor& grad_h0, at::Tensor& grad_c0, at::Tensor& g_row, at::Tensor& g_col,
                        at::Tensor& g_wh) {
  check_cuda_inputs(h, "vsml_step_backward");
  const c10::cuda::CUDAGuard guard(h.device());
  switch (h.size(3)) {
    case 8:
      launch_backward<8>(grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, h, c, row, col, w_h, ticks, grad_h0, grad_c0,
                         g_row, g_col, g_wh);
      break;
    case 16:
      launch_backward<16>(grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, h, c, row, col, w_h, ticks, grad_h0, grad_c0,
                          g_row, g_col, g_wh);
      break;
    default:
      launch_backward<32>(grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, h, c, row, col, w_h, ticks, grad_h0, grad_c0,
                          g_row, g_col, g_wh);
      break;
  }
}

}  // namespace metalearn_ext

TORCH_LIBRARY_IMPL(metalearn_ext, CUDA, m) {
  m.impl("vsml_step", [](const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in, const at::Tensor& bwd_in,
                         const at::Tensor& weight, const at::Tensor& bias, int64_t ticks) {
    return metalearn_ext::vsml_step_forward(h, c, fwd_in, bwd_in, weight, bias, ticks,
                                            &metalearn_ext::vsml_forward_cuda);
  });
  m.impl("vsml_step_backward",
         [](const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_fwd_mean,
            const at::Tensor& grad_bwd_mean, const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in,
            const at::Tensor& bwd_in, const at::Tensor& weight, const at::Tensor& bias, int64_t ticks) {
           return metalearn_ext::vsml_step_backward(grad_h, grad_c, grad_fwd_mean, grad_bwd_mean, h, c, fwd_in,
                                                    bwd_in, weight, bias, ticks, &metalearn_ext::vsml_backward_cuda);
         });
}
