// CPU kernels of metalearn_ext::blur_step and blur_step_backward (csrc/blur_step.h): the fused learning
// step over the CPU products of csrc/cpu/blur.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <string_view>

#include "blur.h"
#include "blur_step.h"

namespace {

using metalearn_ext::BlurStepGenome;
using metalearn_ext::BlurStepOptions;

// The state vectors of the products' kernels are stack arrays of this many states (cpu/blur.cpp).
void check_states(at::TensorList weights, const char* op) {
  const bool ok = weights.empty() || weights[0].dim() != 4 || weights[0].size(3) <= 64;
  TORCH_CHECK_VALUE(ok, op, " (cpp): the number of states k = weights[0].size(3) must be at most 64, got ",
                    weights[0].size(3), "; use backend='reference'");
}

BlurStepOptions options(bool normalize, bool oja, std::string_view hidden, std::string_view output, const char* op) {
  return {normalize, oja, metalearn_ext::blur_activation(hidden, op, "hidden_activation"),
          metalearn_ext::blur_activation(output, op, "output_activation")};
}

std::tuple<std::vector<at::Tensor>, at::Tensor> blur_step_cpu(
    at::TensorList weights, const at::Tensor& x, const at::Tensor& code, const at::Tensor& f, const at::Tensor& eta,
    const at::Tensor& f_hebb, const at::Tensor& eta_hebb, const at::Tensor& nu, const at::Tensor& mu,
    const at::Tensor& nu_hebb, const at::Tensor& mu_hebb, bool normalize, bool oja, c10::string_view hidden,
    c10::string_view output) {
  check_states(weights, "blur_step");
  return metalearn_ext::blur_step_forward(weights, x, code, {f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb},
                                          options(normalize, oja, hidden, output, "blur_step"),
                                          metalearn_ext::cpu_blur_products());
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor>
blur_step_backward_cpu(const c10::List<std::optional<at::Tensor>>& grad_weights,
                       const std::optional<at::Tensor>& grad_pred, at::TensorList weights, const at::Tensor& x,
                       const at::Tensor& code, const at::Tensor& f, const at::Tensor& eta, const at::Tensor& f_hebb,
                       const at::Tensor& eta_hebb, const at::Tensor& nu, const at::Tensor& mu,
                       const at::Tensor& nu_hebb, const at::Tensor& mu_hebb, bool normalize, bool oja,
                       c10::string_view hidden, c10::string_view output) {
  const char* op = "blur_step_backward";
  check_states(weights, op);
  auto g = metalearn_ext::blur_step_backward(grad_weights, grad_pred, weights, x, code,
                                             {f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb},
                                             options(normalize, oja, hidden, output, op),
                                             metalearn_ext::cpu_blur_products());
  const auto& G = g.genome;
  return {std::move(g.weights), g.x, g.code, G.f, G.eta, G.f_hebb, G.eta_hebb, G.nu, G.mu, G.nu_hebb, G.mu_hebb};
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, CPU, m) {
  m.impl("blur_step", &blur_step_cpu);
  m.impl("blur_step_backward", &blur_step_backward_cpu);
}
