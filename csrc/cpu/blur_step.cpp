// CPU kernels of metalearn_ext::blur_step and blur_step_backward (csrc/blur_step.h), and of blur_forward and
// blur_forward_backward (csrc/blur_forward.h: the same kernel's forward pass alone): the direct kernel of
// cpu/blur_step_kernels.h — one pass per copy over raw pointers, for float and double, built for AVX-512,
// AVX2+FMA and the baseline and picked at run time (cpu/isa_dispatch.h). The arguments are checked once
// (shapes, dtypes, devices: no tensor op), the genes read once into a small table, and every tensor is read
// through its strides, so no input is copied or made contiguous first.
//
// METALEARN_BLUR_STEP_COMPOSED=1 (read once per process) runs the composed implementation of
// csrc/blur_step.cpp instead (ATen ops over the products of cpu/blur.cpp, device-generic), so that its
// tests can keep it honest on a machine without another device.
//
// Copies are independent: at::parallel_for splits them into contiguous ranges, each with its own workspace.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blur.h"
#include "blur_forward.h"
#include "blur_step.h"
#include "checks.h"
#include "cpu/blur_step_kernels.h"
#include "cpu/isa_dispatch.h"
#include "cpu/parallel.h"

#if !METALEARN_SIMD
#error "the BLUR CPU kernels need GCC/Clang vector extensions"
#endif

namespace {

using metalearn_ext::BlurActivation;
using metalearn_ext::BlurStepGenome;
using metalearn_ext::BlurStepOptions;
using namespace metalearn_ext::cpu;
using namespace metalearn_ext::cpu::blur_step;

// One entry point per ISA and dtype; the vector widths are 64, 32 and 16 bytes.
#define BLUR_STEP_ENTRIES(TARGET, isa, LF, LD)                                                              \
  TARGET void step_f32_##isa(const StepArgs<float>& a, int64_t t0, int64_t t1, Mode mode) {                \
    run_copies<float, LF>(a, t0, t1, mode);                                                                \
  }                                                                                                        \
  TARGET void step_f64_##isa(const StepArgs<double>& a, int64_t t0, int64_t t1, Mode mode) {               \
    run_copies<double, LD>(a, t0, t1, mode);                                                               \
  }

#define METALEARN_TARGET_BASE
BLUR_STEP_ENTRIES(METALEARN_TARGET_BASE, base, 4, 2)
#if METALEARN_X86_DISPATCH
BLUR_STEP_ENTRIES(METALEARN_TARGET_V3, avx2, 8, 4)
BLUR_STEP_ENTRIES(METALEARN_TARGET_V4, avx512, 16, 8)
#endif
#undef BLUR_STEP_ENTRIES
#undef METALEARN_TARGET_BASE

template <typename T>
using StepFn = void (*)(const StepArgs<T>&, int64_t, int64_t, Mode);

#if METALEARN_X86_DISPATCH
#define BLUR_STEP_PICK(name)                 \
  switch (x86_level()) {                     \
    case kIsaAvx512: return name##_avx512;   \
    case kIsaAvx2: return name##_avx2;       \
    default: return name##_base;             \
  }
#else
#define BLUR_STEP_PICK(name) return name##_base;
#endif
StepFn<float> pick_step(float) { BLUR_STEP_PICK(step_f32) }
StepFn<double> pick_step(double) { BLUR_STEP_PICK(step_f64) }
#undef BLUR_STEP_PICK

bool composed_requested() {
  static const bool on = [] {
    const char* v = std::getenv("METALEARN_BLUR_STEP_COMPOSED");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// The state vectors of the composed path's product kernels are stack arrays of this many states (cpu/blur.cpp).
void check_states(at::TensorList weights, const char* op) {
  const bool ok = weights.empty() || weights[0].dim() != 4 || weights[0].size(3) <= 64;
  TORCH_CHECK_VALUE(ok, op, " (cpp): the number of states k = weights[0].size(3) must be at most 64, got ",
                    weights[0].size(3), "; use backend='reference'");
}

BlurStepOptions options(bool normalize, bool oja, std::string_view hidden, std::string_view output, const char* op) {
  return {normalize, oja, metalearn_ext::blur_activation(hidden, op, "hidden_activation"),
          metalearn_ext::blur_activation(output, op, "output_activation")};
}

Act act_of(BlurActivation a) {
  switch (a) {
    case BlurActivation::kTanh: return Act::kTanh;
    case BlurActivation::kReluTanh: return Act::kReluTanh;
    default: return Act::kIdentity;
  }
}

template <typename T>
Strided<T> strided(const at::Tensor& t) {
  Strided<T> s;
  s.p = t.const_data_ptr<T>();
  for (int64_t d = 0; d < t.dim(); ++d) s.s[d] = t.stride(d);
  return s;
}

// The eight genes in blur_step's order, with their slot in a layer's block of gene_slots(k) values.
struct GeneRef {
  const at::Tensor* tensor;
  const char* name;
  bool matrix;
  int64_t slot;
};

std::vector<GeneRef> gene_refs(const BlurStepGenome& g, int64_t k) {
  return {{&g.f, "f", false, kF},
          {&g.eta, "eta", false, kEta},
          {&g.f_hebb, "f_hebb", false, kFHebb},
          {&g.eta_hebb, "eta_hebb", false, kEtaHebb},
          {&g.nu, "nu", true, kMatrices},
          {&g.mu, "mu", true, kMatrices + k * k},
          {&g.nu_hebb, "nu_hebb", true, kMatrices + 2 * k * k},
          {&g.mu_hebb, "mu_hebb", true, kMatrices + 3 * k * k}};
}

// Every gene of every copy and layer, (T, L, gene_slots(k)), read through the genes' strides; a gene shared
// by the copies ((L,) / (L, k, k)) is repeated. f_hebb and eta_hebb (the decay and rate of the update) must
// be finite: checked on the values read, no tensor op.
template <typename T>
std::vector<T> read_genes(const BlurStepGenome& genome, int64_t Tn, int64_t L, int64_t k, const char* op) {
  const int64_t G = gene_slots(k);
  std::vector<T> out(Tn * L * G);
  for (const GeneRef& ref : gene_refs(genome, k)) {
    const at::Tensor& g = *ref.tensor;
    if (!g.defined()) continue;  // blur_forward reads eta and nu only (the other slots stay zero)
    const bool per_copy = g.dim() == (ref.matrix ? 4 : 2);
    const T* p = g.const_data_ptr<T>();
    const int64_t sl = g.stride(0), st = per_copy ? g.stride(1) : 0;
    const int64_t sc = ref.matrix ? g.stride(g.dim() - 2) : 0, sd = ref.matrix ? g.stride(g.dim() - 1) : 0;
    for (int64_t t = 0; t < Tn; ++t)
      for (int64_t l = 0; l < L; ++l) {
        const T* base = p + l * sl + t * st;
        T* dst = out.data() + (t * L + l) * G + ref.slot;
        if (!ref.matrix) {
          dst[0] = base[0];
          continue;
        }
        for (int64_t c = 0; c < k; ++c)
          for (int64_t d = 0; d < k; ++d) dst[c * k + d] = base[c * sc + d * sd];
      }
    if (ref.slot != kFHebb && ref.slot != kEtaHebb) continue;
    for (int64_t i = 0; i < Tn * L; ++i) {
      if (std::isfinite(out[i * G + ref.slot])) continue;
      std::string got = "[";
      for (int64_t j = 0; j < Tn * L; ++j) got += (j ? ", " : "") + std::to_string(out[j * G + ref.slot]);
      METALEARN_CHECK_ARG(false, op, ref.name, "finite", got + "] (per copy and layer)");
    }
  }
  return out;
}

// The gene gradients (T, L, gene_slots(k)) of every copy into tensors shaped like the genes: placed for a
// per-copy gene, summed over the copies for a shared one.
template <typename T>
void write_gene_grads(const std::vector<T>& grads, const BlurStepGenome& genome, int64_t Tn, int64_t L, int64_t k,
                      at::Tensor* out) {
  const int64_t G = gene_slots(k);
  int64_t which = 0;
  for (const GeneRef& ref : gene_refs(genome, k)) {
    const at::Tensor& g = *ref.tensor;
    if (!g.defined()) {  // a gene blur_forward does not take: no gradient
      ++which;
      continue;
    }
    const bool per_copy = g.dim() == (ref.matrix ? 4 : 2);
    const int64_t m = ref.matrix ? k * k : 1;
    auto o = at::empty(g.sizes(), g.options());  // every element written: no zero fill
    T* op = o.mutable_data_ptr<T>();
    for (int64_t l = 0; l < L; ++l)
      for (int64_t t = 0; t < Tn; ++t) {
        T* dst = op + (per_copy ? l * Tn + t : l) * m;
        const T* src = grads.data() + (t * L + l) * G + ref.slot;
        if (per_copy || t == 0) std::copy_n(src, m, dst);
        else for (int64_t e = 0; e < m; ++e) dst[e] += src[e];
      }
    out[which++] = std::move(o);
  }
}

// Runs copies [0, T) over the threads (none for a small step or inside a parallel region).
template <typename T>
void run(const StepArgs<T>& a, int64_t Tn, Mode mode) {
  int64_t macs = 0;
  for (int64_t l = 0; l < a.L; ++l) macs += a.n[l] * a.n[l + 1];
  const int64_t per_mac = mode == Mode::kStep ? 6 : mode == Mode::kStepBackward ? 16 : mode == Mode::kPredict ? 2 : 6;
  const int64_t chunks = choose_chunks(Tn, per_mac * a.B * a.k * macs * Tn);
  const auto fn = pick_step(T{});
  if (chunks <= 1) return fn(a, 0, Tn, mode);
  at::parallel_for(0, Tn, (Tn + chunks - 1) / chunks, [&](int64_t t0, int64_t t1) { fn(a, t0, t1, mode); });
}

template <typename T>
StepArgs<T> common_args(at::TensorList weights, const at::Tensor& x, const at::Tensor& code,
                        const BlurStepOptions& opt, std::vector<int64_t>& n, std::vector<Strided<T>>& w,
                        const std::vector<T>& genes) {
  const int64_t L = static_cast<int64_t>(weights.size());
  n.resize(L + 1);
  w.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    n[l] = weights[l].size(1);
    w[l] = strided<T>(weights[l]);
  }
  n[L] = weights.back().size(2);
  StepArgs<T> a{};
  a.L = L, a.B = x.size(1), a.k = weights[0].size(3), a.n = n.data(), a.w = w.data();
  a.x = strided<T>(x), a.genes = genes.data();
  if (code.defined()) a.code = strided<T>(code);
  a.normalize = opt.normalize, a.oja = opt.oja, a.hidden = act_of(opt.hidden), a.output = act_of(opt.output);
  a.eps = static_cast<T>(metalearn_ext::kBlurNormEps);
  return a;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> step_forward_direct(at::TensorList weights, const at::Tensor& x,
                                                                    const at::Tensor& code, const BlurStepGenome& genome,
                                                                    const BlurStepOptions& opt) {
  const char* op = "blur_step";
  metalearn_ext::check_blur_step_args(weights, x, code, genome, op);
  const int64_t L = static_cast<int64_t>(weights.size()), Tn = x.size(0), B = x.size(1), k = weights[0].size(3);
  std::vector<at::Tensor> out(L);
  for (int64_t l = 0; l < L; ++l) out[l] = at::empty(weights[l].sizes(), weights[l].options());
  auto pred = at::empty({Tn, B, weights.back().size(2)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blur_step_cpu", [&] {
    const auto genes = read_genes<scalar_t>(genome, Tn, L, k, op);
    std::vector<int64_t> n;
    std::vector<Strided<scalar_t>> w;
    std::vector<scalar_t*> new_w(L);
    for (int64_t l = 0; l < L; ++l) new_w[l] = out[l].mutable_data_ptr<scalar_t>();
    auto a = common_args<scalar_t>(weights, x, code, opt, n, w, genes);
    a.new_w = new_w.data();
    a.pred = pred.mutable_data_ptr<scalar_t>();
    run(a, Tn, Mode::kStep);
  });
  return {std::move(out), std::move(pred)};
}

metalearn_ext::BlurStepGrads step_backward_direct(const c10::List<std::optional<at::Tensor>>& grad_weights,
                                                  const std::optional<at::Tensor>& grad_pred, at::TensorList weights,
                                                  const at::Tensor& x, const at::Tensor& code,
                                                  const BlurStepGenome& genome, const BlurStepOptions& opt,
                                                  bool x_grad) {
  const char* op = "blur_step_backward";
  metalearn_ext::check_blur_step_args(weights, x, code, genome, op);
  const int64_t L = static_cast<int64_t>(weights.size()), Tn = x.size(0), B = x.size(1), k = weights[0].size(3);
  const int64_t C = weights.back().size(2);
  const std::vector<at::Tensor> g_new = metalearn_ext::check_blur_step_grads(grad_weights, grad_pred, weights, x, op);
  const bool has_pred = grad_pred.has_value() && grad_pred->defined();
  metalearn_ext::BlurStepGrads out;
  out.weights.resize(L);
  bool any = has_pred;
  for (const auto& g : g_new) any |= g.defined();
  if (!any) {  // nothing flows back: zeros, as the composed path
    for (int64_t l = 0; l < L; ++l) out.weights[l] = at::zeros_like(weights[l]);
    out.x = at::zeros_like(x);
    out.code = at::zeros_like(code);
    const auto& G = genome;
    out.genome = {at::zeros_like(G.f),  at::zeros_like(G.eta), at::zeros_like(G.f_hebb), at::zeros_like(G.eta_hebb),
                  at::zeros_like(G.nu), at::zeros_like(G.mu),  at::zeros_like(G.nu_hebb), at::zeros_like(G.mu_hebb)};
    return out;
  }
  for (int64_t l = 0; l < L; ++l) out.weights[l] = at::empty(weights[l].sizes(), weights[l].options());
  out.x = x_grad ? at::empty({Tn, B, x.size(2)}, x.options()) : at::zeros({}, x.options()).expand(x.sizes());
  out.code = at::empty({Tn, B, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blur_step_backward_cpu", [&] {
    const auto genes = read_genes<scalar_t>(genome, Tn, L, k, op);
    std::vector<scalar_t> gene_grads(genes.size());
    std::vector<int64_t> n;
    std::vector<Strided<scalar_t>> w, gn(L);
    std::vector<scalar_t*> gw(L);
    for (int64_t l = 0; l < L; ++l) {
      if (g_new[l].defined()) gn[l] = strided<scalar_t>(g_new[l]);
      gw[l] = out.weights[l].mutable_data_ptr<scalar_t>();
    }
    auto a = common_args<scalar_t>(weights, x, code, opt, n, w, genes);
    a.grad_new = gn.data();
    if (has_pred) a.grad_pred = strided<scalar_t>(*grad_pred);
    a.grad_w = gw.data();
    a.grad_x = x_grad ? out.x.mutable_data_ptr<scalar_t>() : nullptr;
    a.skip_grad_x = !x_grad;
    a.grad_code = out.code.mutable_data_ptr<scalar_t>();
    a.grad_genes = gene_grads.data();
    run(a, Tn, Mode::kStepBackward);
    at::Tensor g[8];
    write_gene_grads(gene_grads, genome, Tn, L, k, g);
    out.genome = {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> blur_step_cpu(
    at::TensorList weights, const at::Tensor& x, const at::Tensor& code, const at::Tensor& f, const at::Tensor& eta,
    const at::Tensor& f_hebb, const at::Tensor& eta_hebb, const at::Tensor& nu, const at::Tensor& mu,
    const at::Tensor& nu_hebb, const at::Tensor& mu_hebb, bool normalize, bool oja, c10::string_view hidden,
    c10::string_view output) {
  const BlurStepGenome genome{f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb};
  const auto opt = options(normalize, oja, hidden, output, "blur_step");
  if (!composed_requested()) return step_forward_direct(weights, x, code, genome, opt);
  check_states(weights, "blur_step");
  return metalearn_ext::blur_step_forward(weights, x, code, genome, opt, metalearn_ext::cpu_blur_products());
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor>
blur_step_backward_cpu(const c10::List<std::optional<at::Tensor>>& grad_weights,
                       const std::optional<at::Tensor>& grad_pred, at::TensorList weights, const at::Tensor& x,
                       const at::Tensor& code, const at::Tensor& f, const at::Tensor& eta, const at::Tensor& f_hebb,
                       const at::Tensor& eta_hebb, const at::Tensor& nu, const at::Tensor& mu,
                       const at::Tensor& nu_hebb, const at::Tensor& mu_hebb, bool normalize, bool oja,
                       c10::string_view hidden, c10::string_view output, bool x_grad) {
  const char* op = "blur_step_backward";
  const BlurStepGenome genome{f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb};
  const auto opt = options(normalize, oja, hidden, output, op);
  metalearn_ext::BlurStepGrads g;
  if (!composed_requested()) {
    g = step_backward_direct(grad_weights, grad_pred, weights, x, code, genome, opt, x_grad);
  } else {
    check_states(weights, op);
    g = metalearn_ext::blur_step_backward(grad_weights, grad_pred, weights, x, code, genome, opt,
                                          metalearn_ext::cpu_blur_products());
    if (!x_grad) g.x = at::zeros({}, x.options()).expand(x.sizes());  // as the direct kernel's
  }
  const auto& G = g.genome;
  return {std::move(g.weights), g.x, g.code, G.f, G.eta, G.f_hebb, G.eta_hebb, G.nu, G.mu, G.nu_hebb, G.mu_hebb};
}

// blur_forward: the forward pass alone (Mode::kPredict), pred (T, batch, C).
at::Tensor blur_forward_cpu(at::TensorList weights, const at::Tensor& x, const at::Tensor& eta, const at::Tensor& nu,
                            c10::string_view hidden, c10::string_view output) {
  const char* op = "blur_forward";
  metalearn_ext::check_blur_forward_args(weights, x, eta, nu, op);
  const auto opt = options(false, false, hidden, output, op);
  const int64_t L = static_cast<int64_t>(weights.size()), Tn = x.size(0), B = x.size(1), k = weights[0].size(3);
  auto pred = at::empty({Tn, B, weights.back().size(2)}, x.options());
  if (B == 0) return pred;
  const BlurStepGenome genome{at::Tensor(), eta, at::Tensor(), at::Tensor(), nu, at::Tensor(), at::Tensor(), at::Tensor()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blur_forward_cpu", [&] {
    const auto genes = read_genes<scalar_t>(genome, Tn, L, k, op);
    std::vector<int64_t> n;
    std::vector<Strided<scalar_t>> w;
    auto a = common_args<scalar_t>(weights, x, at::Tensor(), opt, n, w, genes);
    a.pred = pred.mutable_data_ptr<scalar_t>();
    run(a, Tn, Mode::kPredict);
  });
  return pred;
}

// Its gradient w.r.t. weights, x, eta and nu (Mode::kPredictBackward), recomputed from the inputs.
// x_grad false: x's gradient is not computed (zeros, expanded).
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor> blur_forward_backward_cpu(
    const at::Tensor& grad_pred, at::TensorList weights, const at::Tensor& x, const at::Tensor& eta,
    const at::Tensor& nu, c10::string_view hidden, c10::string_view output, bool x_grad) {
  const char* op = "blur_forward_backward";
  metalearn_ext::check_blur_forward_args(weights, x, eta, nu, op);
  metalearn_ext::check_blur_forward_grad(grad_pred, weights, x, op);
  const auto opt = options(false, false, hidden, output, op);
  const int64_t L = static_cast<int64_t>(weights.size()), Tn = x.size(0), B = x.size(1), k = weights[0].size(3);
  std::vector<at::Tensor> gw(L);
  if (B == 0) {
    for (int64_t l = 0; l < L; ++l) gw[l] = at::zeros_like(weights[l]);
    return {std::move(gw), at::zeros_like(x), at::zeros_like(eta), at::zeros_like(nu)};
  }
  for (int64_t l = 0; l < L; ++l) gw[l] = at::empty(weights[l].sizes(), weights[l].options());
  auto gx = x_grad ? at::empty({Tn, B, x.size(2)}, x.options()) : at::zeros({}, x.options()).expand(x.sizes());
  at::Tensor g_genes[8];
  const BlurStepGenome genome{at::Tensor(), eta, at::Tensor(), at::Tensor(), nu, at::Tensor(), at::Tensor(), at::Tensor()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blur_forward_backward_cpu", [&] {
    const auto genes = read_genes<scalar_t>(genome, Tn, L, k, op);
    std::vector<scalar_t> gene_grads(genes.size());
    std::vector<int64_t> n;
    std::vector<Strided<scalar_t>> w;
    std::vector<scalar_t*> gwp(L);
    for (int64_t l = 0; l < L; ++l) gwp[l] = gw[l].mutable_data_ptr<scalar_t>();
    auto a = common_args<scalar_t>(weights, x, at::Tensor(), opt, n, w, genes);
    a.grad_pred = strided<scalar_t>(grad_pred);
    a.grad_w = gwp.data();
    a.grad_x = x_grad ? gx.mutable_data_ptr<scalar_t>() : nullptr;
    a.skip_grad_x = !x_grad;
    a.grad_genes = gene_grads.data();
    run(a, Tn, Mode::kPredictBackward);
    write_gene_grads(gene_grads, genome, Tn, L, k, g_genes);
  });
  return {std::move(gw), gx, g_genes[1], g_genes[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, CPU, m) {
  m.impl("blur_step", &blur_step_cpu);
  m.impl("blur_step_backward", &blur_step_backward_cpu);
  m.impl("blur_forward", &blur_forward_cpu);
  m.impl("blur_forward_backward", &blur_forward_backward_cpu);
}
