// Autograd of metalearn_ext::blur_step, in C++ so that a BLUR unroll of U steps costs U forward calls and
// U backward calls and no Python per step (the Python autograd of the other ops costs tens of µs a call,
// more than this op's work at the quick config's sizes). Device-generic: it reaches the kernels through
// the dispatcher. The backward recomputes from the saved inputs (blur_step_backward). Under
// create_graph=True it calls blur_step_backward with autograd on, whose Python formula
// (metalearn_ext/ops/blur_step/cpp.py) differentiates the reference, so double backward is right.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using at::Tensor;

using StepSig = std::tuple<std::vector<Tensor>, Tensor>(at::TensorList, const Tensor&, const Tensor&, const Tensor&,
                                                        const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                        const Tensor&, const Tensor&, const Tensor&, bool, bool,
                                                        c10::string_view, c10::string_view);
using BackwardSig = std::tuple<std::vector<Tensor>, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                               Tensor, Tensor>(const c10::List<std::optional<Tensor>>&, const std::optional<Tensor>&,
                                               at::TensorList, const Tensor&, const Tensor&, const Tensor&,
                                               const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                               const Tensor&, const Tensor&, const Tensor&, bool, bool,
                                               c10::string_view, c10::string_view, bool);

constexpr int64_t kGenome = 8;  // f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb
constexpr int64_t kFlags = 4;   // normalize, oja, hidden_activation, output_activation

const c10::TypedOperatorHandle<StepSig>& step_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("metalearn_ext::blur_step", "").typed<StepSig>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("metalearn_ext::blur_step_backward", "").typed<BackwardSig>();
  return op;
}

class BlurStepFunction : public torch::autograd::Function<BlurStepFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList weights, const Tensor& x, const Tensor& code,
                               const Tensor& f, const Tensor& eta, const Tensor& f_hebb, const Tensor& eta_hebb,
                               const Tensor& nu, const Tensor& mu, const Tensor& nu_hebb, const Tensor& mu_hebb,
                               bool normalize, bool oja, c10::string_view hidden, c10::string_view output) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, pred] = step_op().call(weights, x, code, f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb, normalize,
                                      oja, hidden, output);
    variable_list saved(weights.begin(), weights.end());
    for (const Tensor* t : {&x, &code, &f, &eta, &f_hebb, &eta_hebb, &nu, &mu, &nu_hebb, &mu_hebb}) saved.push_back(*t);
    ctx->save_for_backward(saved);
    ctx->saved_data["normalize"] = normalize;
    ctx->saved_data["oja"] = oja;
    ctx->saved_data["hidden"] = std::string(hidden);
    ctx->saved_data["output"] = std::string(output);
    ctx->set_materialize_grads(false);  // an output nobody used stays undefined: no zeros allocated
    out.push_back(pred);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t L = static_cast<int64_t>(grads.size()) - 1;
    variable_list result(L + 2 + kGenome + kFlags);  // undefined: no gradient
    c10::List<std::optional<Tensor>> grad_weights;
    grad_weights.reserve(L);
    bool any = grads[L].defined();
    for (int64_t l = 0; l < L; ++l) {
      any |= grads[l].defined();
      grad_weights.push_back(grads[l].defined() ? std::optional<Tensor>(grads[l]) : std::nullopt);
    }
    if (!any) return result;
    const auto saved = ctx->get_saved_variables();
    const at::TensorList weights(saved.data(), L);
    const Tensor* in = saved.data() + L;  // x, code, then the genome
    const auto hidden = ctx->saved_data["hidden"].toStringRef(), output = ctx->saved_data["output"].toStringRef();
    const bool normalize = ctx->saved_data["normalize"].toBool(), oja = ctx->saved_data["oja"].toBool();
    const std::optional<Tensor> grad_pred = grads[L].defined() ? std::optional<Tensor>(grads[L]) : std::nullopt;
    const bool x_grad = ctx->needs_input_grad(L);  // the standardized inputs of a meta-step need none
    auto call = [&] {
      return backward_op().call(grad_weights, grad_pred, weights, in[0], in[1], in[2], in[3], in[4], in[5], in[6],
                                in[7], in[8], in[9], normalize, oja, hidden, output, x_grad);
    };
    std::tuple<std::vector<Tensor>, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> g;
    if (torch::autograd::GradMode::is_enabled()) {  // create_graph=True: record a differentiable backward
      // Zeros for the missing gradients: the Python formula takes a list of tensors, not of optional ones.
      for (int64_t l = 0; l < L; ++l) {
        if (!grads[l].defined()) grad_weights.set(l, at::zeros_like(weights[l]));
      }
      g = call();
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      g = call();
    }
    auto& gw = std::get<0>(g);
    for (int64_t l = 0; l < L; ++l) result[l] = std::move(gw[l]);
    Tensor* rest = result.data() + L;
    std::apply([&](auto&, auto&... ts) {
      int64_t i = 0;
      ((rest[i++] = std::move(ts)), ...);
    }, g);
    if (!x_grad) result[L] = Tensor();
    return result;
  }
};

std::tuple<std::vector<Tensor>, Tensor> blur_step_autograd(at::TensorList weights, const Tensor& x, const Tensor& code,
                                                           const Tensor& f, const Tensor& eta, const Tensor& f_hebb,
                                                           const Tensor& eta_hebb, const Tensor& nu, const Tensor& mu,
                                                           const Tensor& nu_hebb, const Tensor& mu_hebb,
                                                           bool normalize, bool oja, c10::string_view hidden,
                                                           c10::string_view output) {
  auto out = BlurStepFunction::apply(weights, x, code, f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb, normalize,
                                     oja, hidden, output);
  Tensor pred = std::move(out.back());
  out.pop_back();
  return {std::move(out), std::move(pred)};
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, Autograd, m) { m.impl("blur_step", &blur_step_autograd); }
