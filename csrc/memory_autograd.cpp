// Autograd of metalearn_ext::content_read and metalearn_ext::mann_memory_step, in C++ as blur_step's
// (csrc/blur_step_autograd.cpp): the Python autograd of torch.library costs ~10 µs a call even under
// no_grad and ~25 µs with grad, as much as content_read's whole kernel at MANN's sizes. Device-generic:
// the kernels are reached through the dispatcher (the CPU and CUDA keys register them). The backward
// recomputes from the saved inputs (the *_backward ops). Under create_graph=True it calls the backward
// op with autograd on, whose Python formula (metalearn_ext/ops/autograd.py, register_double_backward)
// differentiates the reference after one warning, so double backward is right.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Whether a call needs an autograd node: grad mode on and an input that requires grad (or a forward-mode
// tangent, which the node rejects with its message). Otherwise the kernel runs straight below autograd:
// Function::apply costs a node, saved variables and output wrapping even when nothing is recorded
// (a few µs a call, 10% of content_read's forward at MANN's sizes).
bool needs_node(std::initializer_list<const Tensor*> inputs) {
  const bool grad_mode = torch::autograd::GradMode::is_enabled();
  for (const Tensor* t : inputs) {
    if (!t->defined()) continue;
    if ((grad_mode && t->requires_grad()) || t->_fw_grad(/*level=*/0).defined()) return true;
  }
  return false;
}

// ---- content_read ----

using ReadSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&);
using ReadBackwardSig = std::vector<Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                            const std::optional<Tensor>&);

const c10::TypedOperatorHandle<ReadSig>& read_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("metalearn_ext::content_read", "").typed<ReadSig>();
  return op;
}

const c10::TypedOperatorHandle<ReadBackwardSig>& read_backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("metalearn_ext::content_read_backward", "")
                             .typed<ReadBackwardSig>();
  return op;
}

class ContentReadFunction : public torch::autograd::Function<ContentReadFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& memory, const Tensor& keys,
                               const std::optional<Tensor>& beta) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [weights, reads] = read_op().call(memory, keys, beta);
    ctx->save_for_backward({memory, keys, beta.has_value() ? *beta : Tensor()});
    // An output nobody used gets no zeros from autograd; the backward makes them only if another output has
    // a gradient (the backward ops take tensors, not optional ones).
    ctx->set_materialize_grads(false);
    return {weights, reads};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(3);  // memory, keys, beta; undefined: no gradient
    const auto saved = ctx->get_saved_variables();
    const Tensor &memory = saved[0], &keys = saved[1];
    const std::optional<Tensor> beta = saved[2].defined() ? std::optional<Tensor>(saved[2]) : std::nullopt;
    if (!grads[0].defined() && !grads[1].defined()) return result;
    if (!grads[0].defined()) grads[0] = at::zeros({memory.size(0), keys.size(1), memory.size(1)}, memory.options());
    if (!grads[1].defined()) grads[1] = at::zeros_like(keys);
    std::vector<Tensor> g;
    if (torch::autograd::GradMode::is_enabled()) {  // create_graph=True: a differentiable backward
      g = read_backward_op().call(grads[0], grads[1], memory, keys, beta);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      g = read_backward_op().call(grads[0], grads[1], memory, keys, beta);
    }
    for (size_t i = 0; i < g.size(); ++i) result[i] = std::move(g[i]);
    return result;
  }
};

std::tuple<Tensor, Tensor> content_read_autograd(const Tensor& memory, const Tensor& keys,
                                                 const std::optional<Tensor>& beta) {
  static const Tensor none;
  if (!needs_node({&memory, &keys, beta.has_value() ? &*beta : &none})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return read_op().call(memory, keys, beta);
  }
  auto out = ContentReadFunction::apply(memory, keys, beta);
  return {std::move(out[0]), std::move(out[1])};
}

// ---- mann_memory_step ----

using StepSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                                   const Tensor&, const Tensor&, const Tensor&,
                                                                   double);
using StepBackwardSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, double);
constexpr size_t kStepInputs = 6;   // memory, usage, read_weights, keys, add, alpha
constexpr size_t kStepOutputs = 5;  // memory', read_weights', reads, usage', write_weights

const c10::TypedOperatorHandle<StepSig>& step_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("metalearn_ext::mann_memory_step", "").typed<StepSig>();
  return op;
}

const c10::TypedOperatorHandle<StepBackwardSig>& step_backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("metalearn_ext::mann_memory_step_backward", "")
                             .typed<StepBackwardSig>();
  return op;
}

class MannMemoryStepFunction : public torch::autograd::Function<MannMemoryStepFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& memory, const Tensor& usage,
                               const Tensor& read_weights, const Tensor& keys, const Tensor& add, const Tensor& alpha,
                               double gamma) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto out = step_op().call(memory, usage, read_weights, keys, add, alpha, gamma);
    ctx->save_for_backward({memory, usage, read_weights, keys, add, alpha});
    ctx->saved_data["gamma"] = gamma;
    ctx->set_materialize_grads(false);
    return {std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out), std::get<4>(out)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(kStepInputs + 1);  // the six tensors and gamma; undefined: no gradient
    const auto saved = ctx->get_saved_variables();
    bool any = false;
    for (const auto& g : grads) any |= g.defined();
    if (!any) return result;
    // An output nobody used comes without a gradient: zeros shaped like it, i.e. like the input it updates
    // (memory', read_weights', reads like keys, usage', write_weights like read_weights).
    constexpr size_t like[kStepOutputs] = {0, 2, 3, 1, 2};
    for (size_t i = 0; i < kStepOutputs; ++i) {
      if (!grads[i].defined()) grads[i] = at::zeros_like(saved[like[i]]);
    }
    const double gamma = ctx->saved_data["gamma"].toDouble();
    auto call = [&] {
      return step_backward_op().call(grads[0], grads[1], grads[2], grads[3], grads[4], saved[0], saved[1], saved[2],
                                     saved[3], saved[4], saved[5], gamma);
    };
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> g;
    if (torch::autograd::GradMode::is_enabled()) {
      g = call();
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      g = call();
    }
    std::apply([&](auto&... ts) {
      size_t i = 0;
      ((result[i++] = std::move(ts)), ...);
    }, g);
    return result;
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mann_memory_step_autograd(const Tensor& memory, const Tensor& usage,
                                                                            const Tensor& read_weights,
                                                                            const Tensor& keys, const Tensor& add,
                                                                            const Tensor& alpha, double gamma) {
  if (!needs_node({&memory, &usage, &read_weights, &keys, &add, &alpha})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return step_op().call(memory, usage, read_weights, keys, add, alpha, gamma);
  }
  auto out = MannMemoryStepFunction::apply(memory, usage, read_weights, keys, add, alpha, gamma);
  return {std::move(out[0]), std::move(out[1]), std::move(out[2]), std::move(out[3]), std::move(out[4])};
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, Autograd, m) {
  m.impl("content_read", &content_read_autograd);
  m.impl("mann_memory_step", &mann_memory_step_autograd);
}
