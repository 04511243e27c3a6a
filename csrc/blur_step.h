// BLUR's fused learning step (specs/blur.md §2; nn.BLUR.learning_step): forward through every layer,
// the label into the output, the backward pass through the hidden layers and the Hebbian update of
// every layer in one call, and its gradient in one call, both written over the BlurProducts of
// csrc/blur.h by composing blur_propagate_* and blur_hebbian_* (no product of its own). The backward
// recomputes the step's neuron states from the inputs, so memory stays O(inputs + one step's states).
// This composed implementation is device-generic; on CPU the op runs the direct kernel of
// cpu/blur_step_kernels.h instead (one pass per copy, no ATen op inside), and this one only with
// METALEARN_BLUR_STEP_COMPOSED=1 (csrc/cpu/blur_step.cpp). Both share the argument checks below.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/List.h>

#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "blur.h"

namespace metalearn_ext {

// σ of a layer, by the names of metalearn_ext.nn.blur.ACTIVATIONS.
enum class BlurActivation { kIdentity, kTanh, kReluTanh };

BlurActivation blur_activation(std::string_view name, const char* op, const char* arg);

// The genome of every layer, stacked over the L layers: scalars f, eta, f_hebb, eta_hebb (L,) (shared by
// the copies) or (L, T) (per copy); matrices nu, mu, nu_hebb, mu_hebb (L, k, k) or (L, T, k, k).
struct BlurStepGenome {
  at::Tensor f, eta, f_hebb, eta_hebb, nu, mu, nu_hebb, mu_hebb;
};

struct BlurStepOptions {
  bool normalize, oja;
  BlurActivation hidden, output;
};

// Shared with blur_forward (csrc/blur_forward.h): the per-layer synapses (T, n_l, n_{l+1}, k), float32/float64,
// one dtype and device, k >= min_states; a tensor of weights[0]'s dtype and device; a stacked gene, (L,) / (L, T)
// or, matrix, (L, k, k) / (L, T, k, k).
void check_blur_weights(at::TensorList weights, const char* op, int64_t min_states);
void check_blur_like(const at::Tensor& t, const at::Tensor& like, const char* op, const std::string& arg);
void check_blur_gene(const at::Tensor& g, int64_t L, int64_t T, int64_t k, bool matrix, const at::Tensor& like,
                     const char* op, const char* arg);

// Validates every argument; throws ValueError naming the argument and the expected shape, with the
// messages of ops/blur_step/shapes.py.
void check_blur_step_args(at::TensorList weights, const at::Tensor& x, const at::Tensor& code,
                          const BlurStepGenome& genome, const char* op);

// Validates blur_step_backward's upstream gradients (after check_blur_step_args): grad_weights a list of L,
// each undefined or shaped like its layer's weights; grad_pred undefined or (T, batch, C). Returns them per
// layer (undefined: zero).
std::vector<at::Tensor> check_blur_step_grads(const c10::List<std::optional<at::Tensor>>& grad_weights,
                                              const std::optional<at::Tensor>& grad_pred, at::TensorList weights,
                                              const at::Tensor& x, const char* op);

// (new weights per layer (T, n_l, n_{l+1}, k), pred (T, batch, C) = state 0 of the output before the update).
std::tuple<std::vector<at::Tensor>, at::Tensor> blur_step_forward(at::TensorList weights, const at::Tensor& x,
                                                                  const at::Tensor& code, const BlurStepGenome& genome,
                                                                  const BlurStepOptions& options,
                                                                  const BlurProducts& products);

// Gradients of blur_step w.r.t. weights, x, code and every genome tensor (shaped like them), given the
// gradients of the new weights and of pred; an undefined gradient counts as zero and costs nothing.
struct BlurStepGrads {
  std::vector<at::Tensor> weights;
  at::Tensor x, code;
  BlurStepGenome genome;
};

BlurStepGrads blur_step_backward(const c10::List<std::optional<at::Tensor>>& grad_weights,
                                 const std::optional<at::Tensor>& grad_pred, at::TensorList weights,
                                 const at::Tensor& x, const at::Tensor& code, const BlurStepGenome& genome,
                                 const BlurStepOptions& options, const BlurProducts& products);

}  // namespace metalearn_ext
