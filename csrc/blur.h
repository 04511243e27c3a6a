// BLUR's ops (specs/blur.md §3): argument checks, and the forward and backward passes of blur_propagate
// and blur_hebbian written once over two device products (BlurProducts), shared by the CPU and CUDA
// implementations. Every gradient is one of the two products or a k×k-sized contraction, so the
// backward passes recompute from the inputs and use memory O(inputs).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace metalearn_ext {

// Inside the square root of the synapse normalization (ops/blur_hebbian/reference.py: NORM_EPS).
constexpr double kBlurNormEps = 1e-12;

// The optional epilogue of the pattern product that turns it into the Hebbian update:
//   C[t,r,n] = alpha[t,n]·weight[t,r,n] + lr[t]·product[t,r,n], then with normalize
//   C[t,r,n] /= sqrt(Σ_r C[t,r,n]² + kBlurNormEps).
struct HebbianEpilogue {
  at::Tensor weight;  // (T,R,N) contiguous; undefined: C = product
  at::Tensor alpha;   // (T,N), any strides
  at::Tensor lr;      // (T,), any stride
  bool normalize = false;
};

// C (T,R,N) = Σ_s (mix·A)[t,r,s, n mod k] · Bm[t,s,n], with A (T,R,S,k) of any strides, mix (Tm,k,k)
// contiguous (Tm 1 or T; mixed[c] = Σ_d mix[c,d] A[d]) or undefined for none, Bm (T,S,N) contiguous.
using PatternProduct = at::Tensor (*)(const at::Tensor& A, const at::Tensor& mix, const at::Tensor& Bm,
                                      const HebbianEpilogue& epilogue);
// C (T,R,S,k) = Σ_j (mix·X)[t,r,j,c] · Y[t,s,j,c], with X (T,R,J,k) and Y (T,S,J,k) contiguous.
using ChannelDot = at::Tensor (*)(const at::Tensor& X, const at::Tensor& mix, const at::Tensor& Y);

struct BlurProducts {
  PatternProduct pattern;
  ChannelDot dot;
};

// The CPU products (csrc/cpu/blur.cpp), for the CPU kernels of ops composed of these (csrc/cpu/blur_step.cpp).
const BlurProducts& cpu_blur_products();

// Validate every argument; throw ValueError naming the argument and the expected shape, with the
// messages of the Python checks (ops/blur_*/shapes.py).
void check_blur_propagate_args(const at::Tensor& a, const at::Tensor& weight, const at::Tensor& mix, bool transpose,
                               const char* op);
void check_blur_hebbian_args(const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
                             const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay,
                             const at::Tensor& lr, const char* op);

at::Tensor blur_propagate_forward(const at::Tensor& a, const at::Tensor& weight, const at::Tensor& mix,
                                  bool transpose, const BlurProducts& products);
// (grad_a, grad_weight, grad_mix)
std::tuple<at::Tensor, at::Tensor, at::Tensor> blur_propagate_backward(const at::Tensor& grad, const at::Tensor& a,
                                                                       const at::Tensor& weight, const at::Tensor& mix,
                                                                       bool transpose, const BlurProducts& products);

at::Tensor blur_hebbian_forward(const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
                                const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay,
                                const at::Tensor& lr, bool normalize, bool oja, const BlurProducts& products);
// (grad_weight, grad_pre, grad_post, grad_pre_mix, grad_post_mix, grad_decay, grad_lr)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> blur_hebbian_backward(
    const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
    const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay, const at::Tensor& lr,
    bool normalize, bool oja, const BlurProducts& products);

}  // namespace metalearn_ext
