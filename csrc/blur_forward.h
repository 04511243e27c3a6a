// BLUR's forward pass alone (nn.BLUR.predict; specs/blur.md §2): neuron states start at zero with x in state 0
// of layer 0, a ← σ(η·propagate(a, w, ν)) through every layer, pred = state 0 of the output. The forward half
// of blur_step, with the same genes; its CPU kernel is blur_step's direct kernel in a forward-only mode
// (csrc/cpu/blur_step_kernels.h, registered in csrc/cpu/blur_step.cpp). There is no other device's kernel:
// the Python op (metalearn_ext/ops/blur_forward) runs the reference elsewhere.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace metalearn_ext {

// Validates blur_forward's arguments (ValueError naming the argument, the messages of
// ops/blur_forward/shapes.py): weights per layer (T, n_l, n_{l+1}, k), k >= 1; x (T, batch, n_0); eta (L,) or
// (L, T); nu (L, k, k) or (L, T, k, k); one dtype and device.
void check_blur_forward_args(at::TensorList weights, const at::Tensor& x, const at::Tensor& eta, const at::Tensor& nu,
                             const char* op);

// And the upstream gradient of blur_forward_backward: (T, batch, C) like pred.
void check_blur_forward_grad(const at::Tensor& grad_pred, at::TensorList weights, const at::Tensor& x, const char* op);

}  // namespace metalearn_ext
