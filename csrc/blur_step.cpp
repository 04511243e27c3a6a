#include "blur_step.h"

#include <ATen/Dispatch.h>

#include <string>

#include "checks.h"

namespace metalearn_ext {

BlurActivation blur_activation(std::string_view name, const char* op, const char* arg) {
  if (name == "relu_tanh") return BlurActivation::kReluTanh;
  if (name == "tanh") return BlurActivation::kTanh;
  if (name == "identity") return BlurActivation::kIdentity;
  METALEARN_CHECK_ARG(false, op, arg, "one of 'relu_tanh', 'tanh', 'identity'", "'" + std::string(name) + "'");
  return BlurActivation::kIdentity;
}

namespace {

std::string indexed(const char* name, size_t l) { return std::string(name) + "[" + std::to_string(l) + "]"; }

// "(8, 20, n_2, 2)"-like expected shapes: the free size by name.
std::string weight_shape_str(int64_t T, int64_t n, size_t l, int64_t k) {
  return "(" + std::to_string(T) + ", " + std::to_string(n) + ", n_" + std::to_string(l + 1) + ", " +
         std::to_string(k) + ")";
}

}  // namespace

void check_blur_like(const at::Tensor& t, const at::Tensor& like, const char* op, const std::string& arg) {
  if (t.scalar_type() != like.scalar_type() || t.device() != like.device()) {
    check_same_dtype_device(t, like, op, arg.c_str(), "weights[0]");
  }
}

void check_blur_gene(const at::Tensor& g, int64_t L, int64_t T, int64_t k, bool matrix, const at::Tensor& like,
                     const char* op, const char* arg) {
  const bool ok = matrix ? (g.sizes() == at::IntArrayRef({L, k, k}) || g.sizes() == at::IntArrayRef({L, T, k, k}))
                         : (g.sizes() == at::IntArrayRef({L}) || g.sizes() == at::IntArrayRef({L, T}));
  METALEARN_CHECK_ARG(ok, op, arg,
                      matrix ? "of shape (L, k, k) = " + shape_str({L, k, k}) + " or (L, T, k, k) = " +
                                   shape_str({L, T, k, k}) + " (L layers, T copies, k states from weights)"
                             : "of shape (L,) = " + shape_str({L}) + " or (L, T) = " + shape_str({L, T}) +
                                   " (L layers, T copies from weights)",
                      shape_str(g.sizes()));
  check_blur_like(g, like, op, arg);
}

void check_blur_weights(at::TensorList weights, const char* op, int64_t min_states) {
  METALEARN_CHECK_ARG(!weights.empty(), op, "weights", "a non-empty list of per-layer synapses (T, n_l, n_{l+1}, k)",
                      "an empty list");
  const auto& w0 = weights[0];
  METALEARN_CHECK_ARG(w0.dim() == 4 && w0.numel() > 0, op, "weights[0]", "a non-empty tensor of shape (T, n_0, n_1, k)",
                      shape_str(w0.sizes()));
  check_floating(w0, op, "weights[0]");
  const int64_t T = w0.size(0), k = w0.size(3);
  if (min_states > 1) {
    METALEARN_CHECK_ARG(k >= min_states, op, "weights[0]",
                        "of shape (T, n_0, n_1, k) with k >= " + std::to_string(min_states) +
                            " states (the label goes into state 1)",
                        shape_str(w0.sizes()));
  }
  for (size_t l = 1; l < weights.size(); ++l) {
    const auto& w = weights[l];
    const int64_t n = weights[l - 1].size(2);
    const bool ok = w.dim() == 4 && w.size(0) == T && w.size(1) == n && w.size(2) >= 1 && w.size(3) == k;
    if (!ok) {
      METALEARN_CHECK_ARG(false, op, indexed("weights", l),
                          "of shape (T, n_" + std::to_string(l) + ", n_" + std::to_string(l + 1) + ", k) = " +
                              weight_shape_str(T, n, l, k) + " (T, k from weights[0], n_" + std::to_string(l) +
                              " from weights[" + std::to_string(l - 1) + "])",
                          shape_str(w.sizes()));
    }
    check_blur_like(w, w0, op, indexed("weights", l));
  }
}

namespace {

// Layer l's entry of a stacked gene: () / (k, k) shared by the copies, (T,) / (T, k, k) per copy.
at::Tensor gene(const at::Tensor& g, int64_t l) { return g.select(0, l); }
// A scalar gene of layer l as the (T,) the Hebbian update takes.
at::Tensor gene_vec(const at::Tensor& g, int64_t l, int64_t T) {
  const auto s = g.select(0, l);
  return s.dim() == 0 ? s.expand({T}) : s;
}
// A scalar gene of layer l shaped to scale neuron states (T, batch, n, k).
at::Tensor gene_scale(const at::Tensor& g, int64_t l) {
  const auto s = g.select(0, l);
  return s.dim() == 0 ? s : s.view({-1, 1, 1, 1});
}

void activate_(at::Tensor& z, BlurActivation act) {
  if (act == BlurActivation::kIdentity) return;
  z.tanh_();
  if (act == BlurActivation::kReluTanh) z.clamp_min_(0);
}

// g·σ'(z) from y = σ(z): tanh' = 1 − y², (relu∘tanh)' = 1 − y² where y > 0, else 0 (relu's subgradient
// at 0, as torch's). One pass, no temporaries.
at::Tensor activation_grad(const at::Tensor& grad, const at::Tensor& y, BlurActivation act) {
  if (act == BlurActivation::kIdentity) return grad;
  const auto g = grad.contiguous();
  const auto yc = y.contiguous();
  auto out = at::empty_like(g);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "blur_step_activation_grad", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* yp = yc.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const int64_t n = g.numel();
    if (act == BlurActivation::kTanh) {
      for (int64_t i = 0; i < n; ++i) op[i] = gp[i] * (scalar_t(1) - yp[i] * yp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) op[i] = yp[i] > 0 ? gp[i] * (scalar_t(1) - yp[i] * yp[i]) : scalar_t(0);
    }
  });
  return out;
}

// Σ over (batch, n, k) of a·b per copy, (T,), or over everything, () for a gene shared by the copies.
at::Tensor gene_grad(const at::Tensor& a, const at::Tensor& b, bool per_copy) {
  const auto ac = a.contiguous();
  const auto bc = b.contiguous();
  const int64_t T = ac.size(0), n = ac.numel() / T;
  auto out = at::empty({T}, ac.options());
  AT_DISPATCH_FLOATING_TYPES(ac.scalar_type(), "blur_step_gene_grad", [&] {
    const scalar_t* ap = ac.const_data_ptr<scalar_t>();
    const scalar_t* bp = bc.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      scalar_t acc = 0;
      for (int64_t i = t * n; i < (t + 1) * n; ++i) acc += ap[i] * bp[i];
      op[t] = acc;
    }
  });
  return per_copy ? out : out.sum();
}

void accumulate(at::Tensor& acc, const at::Tensor& g) {  // acc: undefined (zero) or a tensor this file owns
  if (acc.defined()) acc.add_(g);
  else acc = g;
}

// Stack per-layer gradients (undefined: zero) into the shape of the stacked gene.
at::Tensor stack_layers(std::vector<at::Tensor>& per_layer, const at::Tensor& like) {
  for (size_t l = 0; l < per_layer.size(); ++l) {
    if (!per_layer[l].defined()) per_layer[l] = at::zeros(like.sizes().slice(1), like.options());
  }
  return at::stack(per_layer, 0);
}

// Every neuron state of one step. fwd[l]: after the forward pass (fwd[L] becomes the output with the label
// in place, so pred keeps its state 0); post[l]: what the update sees (post[0] = fwd[0] holds the data,
// post[L] = the output with the label, the hidden ones after the backward pass). With keep, also the
// messages before the η scaling, which the gradients of η need.
struct StepStates {
  std::vector<at::Tensor> fwd, post, msg_fwd, msg_bwd;
  at::Tensor pred;
};

StepStates step_states(at::TensorList weights, const at::Tensor& x, const at::Tensor& code,
                       const BlurStepGenome& genome, const BlurStepOptions& options, const BlurProducts& products,
                       bool keep) {
  const int64_t L = static_cast<int64_t>(weights.size()), T = x.size(0), B = x.size(1), k = weights[0].size(3);
  StepStates s;
  s.fwd.resize(L + 1);
  s.post.resize(L + 1);
  if (keep) {
    s.msg_fwd.resize(L);
    s.msg_bwd.resize(L);
  }
  auto a = at::zeros({T, B, x.size(2), k}, x.options());
  a.select(3, 0).copy_(x);
  s.fwd[0] = a;
  for (int64_t l = 0; l < L; ++l) {
    // the f·a term of spec §2 vanishes here: every step starts from zeroed neuron states
    auto msg = blur_propagate_forward(s.fwd[l], weights[l], gene(genome.nu, l), false, products);
    at::Tensor z;
    if (keep) {
      z = msg * gene_scale(genome.eta, l);
      s.msg_fwd[l] = msg;
    } else {
      z = msg.mul_(gene_scale(genome.eta, l));
    }
    activate_(z, l == L - 1 ? options.output : options.hidden);
    s.fwd[l + 1] = z;
  }
  auto& top = s.fwd[L];
  s.pred = top.select(3, 0).clone();
  top.select(3, 1).copy_(code);
  if (k > 2) top.narrow(3, 2, k - 2).zero_();
  s.post[0] = s.fwd[0];
  s.post[L] = top;
  for (int64_t l = L - 1; l >= 1; --l) {  // hidden layers only: layer 0 holds the data
    auto msg = blur_propagate_forward(s.post[l + 1], weights[l], gene(genome.mu, l), true, products);
    auto z = keep ? msg * gene_scale(genome.eta, l) : msg.mul_(gene_scale(genome.eta, l));
    z.addcmul_(s.fwd[l], gene_scale(genome.f, l));
    if (keep) s.msg_bwd[l] = msg;
    activate_(z, options.hidden);
    s.post[l] = z;
  }
  return s;
}

}  // namespace

void check_blur_step_args(at::TensorList weights, const at::Tensor& x, const at::Tensor& code,
                          const BlurStepGenome& genome, const char* op) {
  check_blur_weights(weights, op, 2);
  const auto& w0 = weights[0];
  const int64_t L = static_cast<int64_t>(weights.size()), T = w0.size(0), k = w0.size(3);
  const int64_t D = w0.size(1), C = weights.back().size(2);
  METALEARN_CHECK_ARG(x.dim() == 3 && x.size(0) == T && x.size(1) >= 1 && x.size(2) == D, op, "x",
                      "of shape (T, batch, D) = (" + std::to_string(T) + ", batch, " + std::to_string(D) +
                          ") (T, D from weights[0])",
                      shape_str(x.sizes()));
  check_blur_like(x, w0, op, "x");
  const int64_t B = x.size(1);
  METALEARN_CHECK_ARG(code.sizes() == at::IntArrayRef({T, B, C}), op, "code",
                      "of shape (T, batch, C) = " + shape_str({T, B, C}) + " (batch from x, C from weights[-1])",
                      shape_str(code.sizes()));
  check_blur_like(code, w0, op, "code");
  check_blur_gene(genome.f, L, T, k, false, w0, op, "f");
  check_blur_gene(genome.eta, L, T, k, false, w0, op, "eta");
  check_blur_gene(genome.f_hebb, L, T, k, false, w0, op, "f_hebb");
  check_blur_gene(genome.eta_hebb, L, T, k, false, w0, op, "eta_hebb");
  check_blur_gene(genome.nu, L, T, k, true, w0, op, "nu");
  check_blur_gene(genome.mu, L, T, k, true, w0, op, "mu");
  check_blur_gene(genome.nu_hebb, L, T, k, true, w0, op, "nu_hebb");
  check_blur_gene(genome.mu_hebb, L, T, k, true, w0, op, "mu_hebb");
}

std::vector<at::Tensor> check_blur_step_grads(const c10::List<std::optional<at::Tensor>>& grad_weights,
                                              const std::optional<at::Tensor>& grad_pred, at::TensorList weights,
                                              const at::Tensor& x, const char* op) {
  const int64_t L = static_cast<int64_t>(weights.size()), T = x.size(0), B = x.size(1);
  const int64_t C = weights.back().size(2);
  METALEARN_CHECK_ARG(static_cast<int64_t>(grad_weights.size()) == L, op, "grad_weights",
                      "a list of " + std::to_string(L) + " gradients (one per layer of weights)",
                      std::to_string(grad_weights.size()));
  std::vector<at::Tensor> g_new(L);
  for (int64_t l = 0; l < L; ++l) {
    const std::optional<at::Tensor> g = grad_weights.get(l);
    if (!g.has_value() || !g->defined()) continue;
    METALEARN_CHECK_ARG(g->sizes() == weights[l].sizes(), op, indexed("grad_weights", l),
                        "of shape " + shape_str(weights[l].sizes()) + " like weights[" + std::to_string(l) + "]",
                        shape_str(g->sizes()));
    check_blur_like(*g, weights[0], op, indexed("grad_weights", l));
    g_new[l] = *g;
  }
  if (grad_pred.has_value() && grad_pred->defined()) {
    METALEARN_CHECK_ARG(grad_pred->sizes() == at::IntArrayRef({T, B, C}), op, "grad_pred",
                        "of shape (T, batch, C) = " + shape_str({T, B, C}) + " like pred", shape_str(grad_pred->sizes()));
    check_blur_like(*grad_pred, weights[0], op, "grad_pred");
  }
  return g_new;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> blur_step_forward(at::TensorList weights, const at::Tensor& x,
                                                                  const at::Tensor& code, const BlurStepGenome& genome,
                                                                  const BlurStepOptions& options,
                                                                  const BlurProducts& products) {
  check_blur_step_args(weights, x, code, genome, "blur_step");
  const int64_t L = static_cast<int64_t>(weights.size()), T = x.size(0);
  auto s = step_states(weights, x, code, genome, options, products, false);
  std::vector<at::Tensor> out(L);
  for (int64_t l = 0; l < L; ++l) {
    out[l] = blur_hebbian_forward(weights[l], s.post[l], s.post[l + 1], gene(genome.nu_hebb, l),
                                  gene(genome.mu_hebb, l), gene_vec(genome.f_hebb, l, T),
                                  gene_vec(genome.eta_hebb, l, T), options.normalize, options.oja, products);
  }
  return {std::move(out), std::move(s.pred)};
}

BlurStepGrads blur_step_backward(const c10::List<std::optional<at::Tensor>>& grad_weights,
                                 const std::optional<at::Tensor>& grad_pred, at::TensorList weights,
                                 const at::Tensor& x, const at::Tensor& code, const BlurStepGenome& genome,
                                 const BlurStepOptions& options, const BlurProducts& products) {
  const char* op = "blur_step_backward";
  check_blur_step_args(weights, x, code, genome, op);
  const int64_t L = static_cast<int64_t>(weights.size()), T = x.size(0), B = x.size(1), k = weights[0].size(3);
  const int64_t C = weights.back().size(2);
  std::vector<at::Tensor> g_new = check_blur_step_grads(grad_weights, grad_pred, weights, x, op);
  bool any = false;
  for (const auto& g : g_new) any |= g.defined();
  const bool has_pred = grad_pred.has_value() && grad_pred->defined();
  const bool per_copy_f = genome.f.dim() == 2, per_copy_eta = genome.eta.dim() == 2;
  const bool per_copy_fh = genome.f_hebb.dim() == 2, per_copy_etah = genome.eta_hebb.dim() == 2;
  std::vector<at::Tensor> gw(L), g_f(L), g_eta(L), g_fh(L), g_etah(L), g_nu(L), g_mu(L), g_nuh(L), g_muh(L);
  std::vector<at::Tensor> g_post(L + 1), g_fwd(L + 1);
  at::Tensor g_x, g_code;
  if (any || has_pred) {
    auto s = step_states(weights, x, code, genome, options, products, true);
    // The Hebbian updates read post[l] (pre-synaptic) and post[l + 1] (post-synaptic).
    for (int64_t l = 0; l < L; ++l) {
      if (!g_new[l].defined()) continue;
      auto [g_w, g_pre, g_postl, g_pm, g_qm, g_decay, g_lr] = blur_hebbian_backward(
          g_new[l], weights[l], s.post[l], s.post[l + 1], gene(genome.nu_hebb, l), gene(genome.mu_hebb, l),
          gene_vec(genome.f_hebb, l, T), gene_vec(genome.eta_hebb, l, T), options.normalize, options.oja, products);
      gw[l] = g_w;
      accumulate(g_post[l], g_pre);
      accumulate(g_post[l + 1], g_postl);
      g_nuh[l] = g_pm;
      g_muh[l] = g_qm;
      g_fh[l] = per_copy_fh ? g_decay : g_decay.sum();
      g_etah[l] = per_copy_etah ? g_lr : g_lr.sum();
    }
    // The backward pass ran l = L-1 .. 1, so its gradient runs l = 1 .. L-1: post[l] = σ(f·fwd[l] + η·msg),
    // msg = propagate(post[l + 1], w[l], μ, transpose).
    for (int64_t l = 1; l < L; ++l) {
      if (!g_post[l].defined()) continue;
      const auto gz = activation_grad(g_post[l], s.post[l], options.hidden);
      g_f[l] = gene_grad(gz, s.fwd[l], per_copy_f);
      g_eta[l] = gene_grad(gz, s.msg_bwd[l], per_copy_eta);
      accumulate(g_fwd[l], gz * gene_scale(genome.f, l));
      auto [g_a, g_w, g_m] = blur_propagate_backward(gz * gene_scale(genome.eta, l), s.post[l + 1], weights[l],
                                                     gene(genome.mu, l), true, products);
      accumulate(g_post[l + 1], g_a);
      accumulate(gw[l], g_w);
      g_mu[l] = g_m;
    }
    // The label: post[L] = [pred, code, 0, ...]; pred = fwd[L][..., 0].
    if (g_post[L].defined()) g_code = g_post[L].select(3, 1).contiguous();
    if (has_pred || g_post[L].defined()) {
      auto g_top = at::zeros({T, B, C, k}, x.options());
      auto g0 = g_top.select(3, 0);
      if (g_post[L].defined()) g0.copy_(g_post[L].select(3, 0));
      if (has_pred) g0.add_(*grad_pred);
      g_fwd[L] = g_top;
    }
    // The forward pass, in reverse: fwd[l + 1] = σ(η·propagate(fwd[l], w[l], ν)). Only state 0 of the
    // output's gradient is non-zero, so post[L] (whose state 0 is pred) serves as its σ output.
    at::Tensor g_a0 = g_post[0];
    for (int64_t l = L - 1; l >= 0; --l) {
      if (!g_fwd[l + 1].defined()) continue;
      const auto& y = l == L - 1 ? s.post[L] : s.fwd[l + 1];
      const auto gz = activation_grad(g_fwd[l + 1], y, l == L - 1 ? options.output : options.hidden);
      accumulate(g_eta[l], gene_grad(gz, s.msg_fwd[l], per_copy_eta));
      auto [g_a, g_w, g_m] = blur_propagate_backward(gz * gene_scale(genome.eta, l), s.fwd[l], weights[l],
                                                     gene(genome.nu, l), false, products);
      accumulate(gw[l], g_w);
      g_nu[l] = g_m;
      if (l > 0) accumulate(g_fwd[l], g_a);
      else accumulate(g_a0, g_a);
    }
    if (g_a0.defined()) g_x = g_a0.select(3, 0).contiguous();
  }
  BlurStepGrads out;
  out.weights.resize(L);
  for (int64_t l = 0; l < L; ++l) out.weights[l] = gw[l].defined() ? gw[l] : at::zeros_like(weights[l]);
  out.x = g_x.defined() ? g_x : at::zeros_like(x);
  out.code = g_code.defined() ? g_code : at::zeros_like(code);
  out.genome = {stack_layers(g_f, genome.f),     stack_layers(g_eta, genome.eta), stack_layers(g_fh, genome.f_hebb),
                stack_layers(g_etah, genome.eta_hebb), stack_layers(g_nu, genome.nu), stack_layers(g_mu, genome.mu),
                stack_layers(g_nuh, genome.nu_hebb),   stack_layers(g_muh, genome.mu_hebb)};
  return out;
}

}  // namespace metalearn_ext
