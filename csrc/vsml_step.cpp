#include "vsml_step.h"

#include "checks.h"

namespace metalearn_ext {

void check_vsml_step_args(const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in, const at::Tensor& bwd_in,
                          const at::Tensor& weight, const at::Tensor& bias, int64_t ticks, const char* op) {
  TORCH_CHECK_VALUE(ticks >= 1, op, ": ticks must be >= 1, got ", ticks);
  check_rank(h, op, "h", 4, "of shape (T, A, B, N)");
  check_nonempty(h, op, "h");
  check_floating(h, op, "h");
  const int64_t T = h.size(0), A = h.size(1), B = h.size(2), N = h.size(3);
  METALEARN_CHECK_ARG(c.sizes() == h.sizes(), op, "c", "of shape (T, A, B, N) = " + shape_str(h.sizes()) + " like h",
                      shape_str(c.sizes()));
  check_rank(fwd_in, op, "fwd_in", 3, "of shape (T, A, M)");
  check_nonempty(fwd_in, op, "fwd_in");
  const int64_t M = fwd_in.size(2);
  METALEARN_CHECK_ARG(fwd_in.size(0) == T && fwd_in.size(1) == A, op, "fwd_in",
                      "of shape (T, A, M) = " + shape_str({T, A, M}), shape_str(fwd_in.sizes()));
  METALEARN_CHECK_ARG(bwd_in.sizes() == at::IntArrayRef({T, B, M}), op, "bwd_in",
                      "of shape (T, B, M) = " + shape_str({T, B, M}) + " (M from fwd_in)", shape_str(bwd_in.sizes()));
  const bool weight_ok = (weight.dim() == 2 || (weight.dim() == 3 && weight.size(0) == T)) &&
                         weight.size(-2) == 4 * N && weight.size(-1) == 2 * M + N;
  METALEARN_CHECK_ARG(weight_ok, op, "weight",
                      "of shape (4N, 2M+N) = " + shape_str({4 * N, 2 * M + N}) + " or (T, 4N, 2M+N) = " +
                          shape_str({T, 4 * N, 2 * M + N}),
                      shape_str(weight.sizes()));
  const bool bias_ok = (bias.dim() == 1 || (bias.dim() == 2 && bias.size(0) == T)) && bias.size(-1) == 4 * N;
  METALEARN_CHECK_ARG(bias_ok, op, "bias",
                      "of shape (4N,) = " + shape_str({4 * N}) + " or (T, 4N) = " + shape_str({T, 4 * N}),
                      shape_str(bias.sizes()));
  check_same_dtype_device(c, h, op, "c", "h");
  check_same_dtype_device(fwd_in, h, op, "fwd_in", "h");
  check_same_dtype_device(bwd_in, h, op, "bwd_in", "h");
  check_same_dtype_device(weight, h, op, "weight", "h");
  check_same_dtype_device(bias, h, op, "bias", "h");
}

namespace {

struct Projected {
  at::Tensor row, col, w_h;  // (T,A,4N), (T,B,4N), (Tw,4N,N), contiguous
};

// The message part of the gates depends on a only or b only: computed once per row and column.
Projected project(const at::Tensor& fwd_in, const at::Tensor& bwd_in, const at::Tensor& weight,
                  const at::Tensor& bias) {
  const int64_t M = fwd_in.size(2);
  const auto w_fwd = weight.narrow(-1, 0, M), w_bwd = weight.narrow(-1, M, M);
  const auto w_h = weight.narrow(-1, 2 * M, weight.size(-1) - 2 * M);
  Projected p;
  p.row = (at::matmul(fwd_in, w_fwd.transpose(-1, -2)) + bias.unsqueeze(-2)).contiguous();
  p.col = at::matmul(bwd_in, w_bwd.transpose(-1, -2)).contiguous();
  p.w_h = (weight.dim() == 2 ? w_h.unsqueeze(0) : w_h).contiguous();
  return p;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vsml_step_forward(
    const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in, const at::Tensor& bwd_in,
    const at::Tensor& weight, const at::Tensor& bias, int64_t ticks, VsmlForwardKernel kernel) {
  check_vsml_step_args(h, c, fwd_in, bwd_in, weight, bias, ticks, "vsml_step");
  const int64_t T = h.size(0), A = h.size(1), B = h.size(2), N = h.size(3);
  const Projected p = project(fwd_in, bwd_in, weight, bias);
  auto h_out = at::empty_like(h, at::MemoryFormat::Contiguous);
  auto c_out = at::empty_like(h_out);
  auto fwd_mean = at::empty({T, B, N}, h.options());
  auto bwd_mean = at::empty({T, A, N}, h.options());
  kernel(h.contiguous(), c.contiguous(), p.row, p.col, p.w_h, ticks, h_out, c_out, fwd_mean, bwd_mean);
  return {h_out, c_out, fwd_mean, bwd_mean};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> vsml_step_backward(
    const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& grad_fwd_mean,
    const at::Tensor& grad_bwd_mean, const at::Tensor& h, const at::Tensor& c, const at::Tensor& fwd_in,
    const at::Tensor& bwd_in, const at::Tensor& weight, const at::Tensor& bias, int64_t ticks,
    VsmlBackwardKernel kernel) {
  const char* op = "vsml_step_backward";
  check_vsml_step_args(h, c, fwd_in, bwd_in, weight, bias, ticks, op);
  const int64_t T = h.size(0), A = h.size(1), B = h.size(2), N = h.size(3), M = fwd_in.size(2);
  METALEARN_CHECK_ARG(grad_h.sizes() == h.sizes(), op, "grad_h", "of shape (T, A, B, N) = " + shape_str(h.sizes()),
                      shape_str(grad_h.sizes()));
  METALEARN_CHECK_ARG(grad_c.sizes() == h.sizes(), op, "grad_c", "of shape (T, A, B, N) = " + shape_str(h.sizes()),
                      shape_str(grad_c.sizes()));
  METALEARN_CHECK_ARG(grad_fwd_mean.sizes() == at::IntArrayRef({T, B, N}), op, "grad_fwd_mean",
                      "of shape (T, B, N) = " + shape_str({T, B, N}), shape_str(grad_fwd_mean.sizes()));
  METALEARN_CHECK_ARG(grad_bwd_mean.sizes() == at::IntArrayRef({T, A, N}), op, "grad_bwd_mean",
                      "of shape (T, A, N) = " + shape_str({T, A, N}), shape_str(grad_bwd_mean.sizes()));
  check_same_dtype_device(grad_h, h, op, "grad_h", "h");
  check_same_dtype_device(grad_c, h, op, "grad_c", "h");
  check_same_dtype_device(grad_fwd_mean, h, op, "grad_fwd_mean", "h");
  check_same_dtype_device(grad_bwd_mean, h, op, "grad_bwd_mean", "h");

  const Projected p = project(fwd_in, bwd_in, weight, bias);
  auto grad_h0 = at::empty_like(h, at::MemoryFormat::Contiguous);
  auto grad_c0 = at::empty_like(grad_h0);
  auto g_row = at::zeros({T, A, 4 * N}, h.options());
  auto g_col = at::zeros({T, B, 4 * N}, h.options());
  auto g_wh = at::zeros({T, 4 * N, N}, h.options());
  kernel(grad_h.contiguous(), grad_c.contiguous(), grad_fwd_mean.contiguous(), grad_bwd_mean.contiguous(),
         h.contiguous(), c.contiguous(), p.row, p.col, p.w_h, ticks, grad_h0, grad_c0, g_row, g_col, g_wh);

  // Everything downstream of the gate pre-activations is linear in the messages: small matmuls.
  const auto w_fwd = weight.narrow(-1, 0, M), w_bwd = weight.narrow(-1, M, M);
  auto grad_fwd_in = at::matmul(g_row, w_fwd);  // (T,A,M)
  auto grad_bwd_in = at::matmul(g_col, w_bwd);  // (T,B,M)
  auto grad_weight = at::cat({at::matmul(g_row.transpose(1, 2), fwd_in), at::matmul(g_col.transpose(1, 2), bwd_in),
                              g_wh}, -1);  // (T,4N,2M+N)
  auto grad_bias = g_row.sum(1);           // (T,4N)
  if (weight.dim() == 2) grad_weight = grad_weight.sum(0);
  if (bias.dim() == 1) grad_bias = grad_bias.sum(0);
  return {grad_h0, grad_c0, grad_fwd_in, grad_bwd_in, grad_weight, grad_bias};
}

}  // namespace metalearn_ext
