#include "blur_forward.h"

#include <string>

#include "blur_step.h"
#include "checks.h"

namespace metalearn_ext {

void check_blur_forward_args(at::TensorList weights, const at::Tensor& x, const at::Tensor& eta, const at::Tensor& nu,
                             const char* op) {
  check_blur_weights(weights, op, 1);
  const auto& w0 = weights[0];
  const int64_t L = static_cast<int64_t>(weights.size()), T = w0.size(0), D = w0.size(1), k = w0.size(3);
  METALEARN_CHECK_ARG(x.dim() == 3 && x.size(0) == T && x.size(2) == D, op, "x",
                      "of shape (T, batch, D) = (" + std::to_string(T) + ", batch, " + std::to_string(D) +
                          ") (T, D from weights[0])",
                      shape_str(x.sizes()));
  check_blur_like(x, w0, op, "x");
  check_blur_gene(eta, L, T, k, false, w0, op, "eta");
  check_blur_gene(nu, L, T, k, true, w0, op, "nu");
}

void check_blur_forward_grad(const at::Tensor& grad_pred, at::TensorList weights, const at::Tensor& x, const char* op) {
  const int64_t T = x.size(0), B = x.size(1), C = weights.back().size(2);
  METALEARN_CHECK_ARG(grad_pred.sizes() == at::IntArrayRef({T, B, C}), op, "grad_pred",
                      "of shape (T, batch, C) = " + shape_str({T, B, C}) + " like pred", shape_str(grad_pred.sizes()));
  check_blur_like(grad_pred, weights[0], op, "grad_pred");
}

}  // namespace metalearn_ext
