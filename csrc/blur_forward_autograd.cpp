// Autograd of metalearn_ext::blur_forward, in C++ as blur_step's (csrc/blur_step_autograd.cpp): one node per
// call and no Python, the backward recomputing from the saved inputs (blur_forward_backward). Under
// create_graph=True it calls blur_forward_backward with autograd on, whose Python formula
// (metalearn_ext/ops/blur_forward/cpp.py) differentiates the reference, so a double backward is right.
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using at::Tensor;

using ForwardSig = Tensor(at::TensorList, const Tensor&, const Tensor&, const Tensor&, c10::string_view,
                          c10::string_view);
using BackwardSig = std::tuple<std::vector<Tensor>, Tensor, Tensor, Tensor>(const Tensor&, at::TensorList,
                                                                             const Tensor&, const Tensor&,
                                                                             const Tensor&, c10::string_view,
                                                                             c10::string_view, bool);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("metalearn_ext::blur_forward", "").typed<ForwardSig>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("metalearn_ext::blur_forward_backward", "").typed<BackwardSig>();
  return op;
}

class BlurForwardFunction : public torch::autograd::Function<BlurForwardFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, at::TensorList weights, const Tensor& x, const Tensor& eta,
                        const Tensor& nu, c10::string_view hidden, c10::string_view output) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto pred = forward_op().call(weights, x, eta, nu, hidden, output);
    variable_list saved(weights.begin(), weights.end());
    for (const Tensor* t : {&x, &eta, &nu}) saved.push_back(*t);
    ctx->save_for_backward(saved);
    ctx->saved_data["hidden"] = std::string(hidden);
    ctx->saved_data["output"] = std::string(output);
    return pred;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t L = static_cast<int64_t>(saved.size()) - 3;
    const at::TensorList weights(saved.data(), L);
    const Tensor *in = saved.data() + L;  // x, eta, nu
    const auto hidden = ctx->saved_data["hidden"].toStringRef(), output = ctx->saved_data["output"].toStringRef();
    variable_list result(L + 5);  // weights..., x, eta, nu, and none for the two activations
    const bool x_grad = ctx->needs_input_grad(L);  // the query inputs of a meta-step need none
    std::tuple<std::vector<Tensor>, Tensor, Tensor, Tensor> g;
    if (torch::autograd::GradMode::is_enabled()) {  // create_graph=True: record a differentiable backward
      g = backward_op().call(grads[0], weights, in[0], in[1], in[2], hidden, output, x_grad);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      g = backward_op().call(grads[0], weights, in[0], in[1], in[2], hidden, output, x_grad);
    }
    auto& gw = std::get<0>(g);
    for (int64_t l = 0; l < L; ++l) result[l] = std::move(gw[l]);
    if (x_grad) result[L] = std::move(std::get<1>(g));
    result[L + 1] = std::move(std::get<2>(g));
    result[L + 2] = std::move(std::get<3>(g));
    return result;
  }
};

Tensor blur_forward_autograd(at::TensorList weights, const Tensor& x, const Tensor& eta, const Tensor& nu,
                             c10::string_view hidden, c10::string_view output) {
  return BlurForwardFunction::apply(weights, x, eta, nu, hidden, output);
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, Autograd, m) { m.impl("blur_forward", &blur_forward_autograd); }
