// CUDA kernels of metalearn_ext::blur_propagate and blur_hebbian (specs/blur.md §3): the two products
// behind BlurProducts (csrc/blur.h), float and double.
//
// Both products are k batched matrix products, one per state channel c, with the k×k mix folded into
// the loading of the left operand:  C[t,r,o,c] = Σ_q (mix·A)[t,r,q,c] · Bop[t,q,o,c].
//   pattern product: q = s, o = j, Bop[t,s,j,c] = Bm[t,s,j·k+c];   channel dot: q = j, o = s, Bop = Y[t,s,j,c].
// One kernel, told apart by strides: a block computes a kTile × kTile tile of (r, o) for one (t, c),
// stepping over q through shared memory; a thread mixes the k states of one (r, q) as it loads them.
// The Hebbian epilogue (alpha·w + lr·product) runs in registers; the normalization needs the norm of a
// column over every r, summed across blocks with atomics and applied by a second, elementwise kernel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "blur.h"

namespace metalearn_ext {
namespace {

constexpr int kTile = 16;

template <typename T>
struct GemmArgs {
  const T* A;
  int64_t a_t, a_r, a_q, a_d;
  const T* mix;  // (Tm,k,k) contiguous or nullptr
  int64_t mix_t;
  const T* B;
  int64_t b_t, b_q, b_o, b_c;
  T* C;
  int64_t c_t, c_r, c_o, c_c;
  int64_t R, Q, O, k;
  // Hebbian epilogue (w != nullptr); w is indexed like C.
  const T* w;
  const T* alpha;
  int64_t al_t, al_o, al_c;
  const T* lr;
  int64_t lr_t;
  T* colsq;  // (T, O·k) zeroed, or nullptr: no normalization
};

template <typename T>
__global__ void __launch_bounds__(kTile* kTile) channel_gemm_kernel(const GemmArgs<T> p) {
  __shared__ T As[kTile][kTile + 1];  // (r, q), padded against bank conflicts
  __shared__ T Bs[kTile][kTile + 1];  // (q, o)
  const int64_t t = blockIdx.z / p.k, c = blockIdx.z % p.k;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t r = int64_t(blockIdx.y) * kTile + ty, o = int64_t(blockIdx.x) * kTile + tx;
  const T* mix = p.mix ? p.mix + t * p.mix_t + c * p.k : nullptr;  // row c of the mix
  T acc = 0;
  for (int64_t q0 = 0; q0 < p.Q; q0 += kTile) {
    // Thread (ty, tx) loads A[r, q0+tx] (mixed) and Bop[q0+ty, o].
    const int64_t qa = q0 + tx, qb = q0 + ty;
    T a = 0;
    if (r < p.R && qa < p.Q) {
      const T* ap = p.A + t * p.a_t + r * p.a_r + qa * p.a_q;
      if (mix == nullptr) {
        a = ap[c * p.a_d];
      } else {
        for (int64_t d = 0; d < p.k; ++d) a += mix[d] * ap[d * p.a_d];
      }
    }
    As[ty][tx] = a;
    Bs[ty][tx] = (qb < p.Q && o < p.O) ? p.B[t * p.b_t + qb * p.b_q + o * p.b_o + c * p.b_c] : T(0);
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kTile; ++q) acc += As[ty][q] * Bs[q][tx];
    __syncthreads();
  }
  if (r >= p.R || o >= p.O) return;
  const int64_t at = t * p.c_t + r * p.c_r + o * p.c_o + c * p.c_c;
  if (p.w != nullptr) {
    acc = p.alpha[t * p.al_t + o * p.al_o + c * p.al_c] * p.w[at] + p.lr[t * p.lr_t] * acc;
    if (p.colsq != nullptr) atomicAdd(p.colsq + t * p.O * p.k + o * p.k + c, acc * acc);
  }
  p.C[at] = acc;
}

// C[t, r, n] /= sqrt(colsq[t, n] + eps), C (T, R, N) contiguous.
template <typename T>
__global__ void rescale_kernel(T* C, const T* colsq, int64_t R, int64_t N, int64_t total, T eps) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i % N, t = i / (R * N);
    C[i] *= T(1) / sqrt(colsq[t * N + n] + eps);
  }
}

template <typename T>
void launch_gemm(const GemmArgs<T>& p, int64_t T_) {
  TORCH_CHECK(T_ * p.k <= 65535, "blur (CUDA): T·k = ", T_ * p.k, " exceeds the grid's z limit of 65535");
  const dim3 grid((p.O + kTile - 1) / kTile, (p.R + kTile - 1) / kTile, T_ * p.k);
  channel_gemm_kernel<T><<<grid, dim3(kTile, kTile), 0, at::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor pattern_cuda(const at::Tensor& A, const at::Tensor& mix, const at::Tensor& Bm, const HebbianEpilogue& epi) {
  const c10::cuda::CUDAGuard guard(Bm.device());
  const int64_t T = A.size(0), R = A.size(1), S = A.size(2), k = A.size(3), N = Bm.size(2);
  auto C = at::empty({T, R, N}, Bm.options());
  at::Tensor colsq;
  if (epi.weight.defined() && epi.normalize) colsq = at::zeros({T, N}, Bm.options());
  AT_DISPATCH_FLOATING_TYPES(Bm.scalar_type(), "blur_pattern_cuda", [&] {
    GemmArgs<scalar_t> p{};
    p.A = A.const_data_ptr<scalar_t>();
    p.a_t = A.stride(0), p.a_r = A.stride(1), p.a_q = A.stride(2), p.a_d = A.stride(3);
    p.mix = mix.defined() ? mix.const_data_ptr<scalar_t>() : nullptr;
    p.mix_t = mix.defined() && mix.size(0) > 1 ? k * k : 0;
    p.B = Bm.const_data_ptr<scalar_t>();
    p.b_t = S * N, p.b_q = N, p.b_o = k, p.b_c = 1;
    p.C = C.mutable_data_ptr<scalar_t>();
    p.c_t = R * N, p.c_r = N, p.c_o = k, p.c_c = 1;
    p.R = R, p.Q = S, p.O = N / k, p.k = k;
    if (epi.weight.defined()) {
      p.w = epi.weight.const_data_ptr<scalar_t>();
      p.alpha = epi.alpha.const_data_ptr<scalar_t>();
      p.al_t = epi.alpha.stride(0), p.al_o = epi.alpha.stride(1) * k, p.al_c = epi.alpha.stride(1);
      p.lr = epi.lr.const_data_ptr<scalar_t>();
      p.lr_t = epi.lr.stride(0);
      p.colsq = colsq.defined() ? colsq.mutable_data_ptr<scalar_t>() : nullptr;
    }
    launch_gemm(p, T);
    if (colsq.defined()) {
      const int64_t total = T * R * N;
      const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 65535));
      rescale_kernel<scalar_t><<<blocks, 256, 0, at::cuda::getCurrentCUDAStream()>>>(
          p.C, colsq.const_data_ptr<scalar_t>(), R, N, total, static_cast<scalar_t>(kBlurNormEps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return C;
}

at::Tensor dot_cuda(const at::Tensor& X, const at::Tensor& mix, const at::Tensor& Y) {
  const c10::cuda::CUDAGuard guard(X.device());
  const int64_t T = X.size(0), R = X.size(1), J = X.size(2), k = X.size(3), S = Y.size(1);
  auto C = at::empty({T, R, S, k}, X.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "blur_dot_cuda", [&] {
    GemmArgs<scalar_t> p{};
    p.A = X.const_data_ptr<scalar_t>();
    p.a_t = X.stride(0), p.a_r = X.stride(1), p.a_q = X.stride(2), p.a_d = X.stride(3);
    p.mix = mix.defined() ? mix.const_data_ptr<scalar_t>() : nullptr;
    p.mix_t = mix.defined() && mix.size(0) > 1 ? k * k : 0;
    p.B = Y.const_data_ptr<scalar_t>();
    p.b_t = S * J * k, p.b_q = k, p.b_o = J * k, p.b_c = 1;  // Bop[t, q=j, o=s, c] = Y[t, s, j, c]
    p.C = C.mutable_data_ptr<scalar_t>();
    p.c_t = R * S * k, p.c_r = S * k, p.c_o = k, p.c_c = 1;
    p.R = R, p.Q = J, p.O = S, p.k = k;
    launch_gemm(p, T);
  });
  return C;
}

void check_cuda(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.is_cuda(), op, " (CUDA): expected CUDA tensors, got device ", x.device().str());
}

const BlurProducts kCudaProducts{&pattern_cuda, &dot_cuda};

}  // namespace
}  // namespace metalearn_ext

TORCH_LIBRARY_IMPL(metalearn_ext, CUDA, m) {
  using namespace metalearn_ext;
  m.impl("blur_propagate", [](const at::Tensor& a, const at::Tensor& weight, const at::Tensor& mix, bool transpose) {
    check_cuda(weight, "blur_propagate");
    return blur_propagate_forward(a, weight, mix, transpose, kCudaProducts);
  });
  m.impl("blur_propagate_backward", [](const at::Tensor& grad, const at::Tensor& a, const at::Tensor& weight,
                                       const at::Tensor& mix, bool transpose) {
    check_cuda(weight, "blur_propagate_backward");
    return blur_propagate_backward(grad, a, weight, mix, transpose, kCudaProducts);
  });
  m.impl("blur_hebbian", [](const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
                            const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay,
                            const at::Tensor& lr, bool normalize, bool oja) {
    check_cuda(weight, "blur_hebbian");
    return blur_hebbian_forward(weight, pre, post, pre_mix, post_mix, decay, lr, normalize, oja, kCudaProducts);
  });
  m.impl("blur_hebbian_backward",
         [](const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
            const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay, const at::Tensor& lr,
            bool normalize, bool oja) {
           check_cuda(weight, "blur_hebbian_backward");
           return blur_hebbian_backward(grad, weight, pre, post, pre_mix, post_mix, decay, lr, normalize, oja,
                                        kCudaProducts);
         });
}
