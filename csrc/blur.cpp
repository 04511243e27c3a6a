#include "blur.h"

#include "checks.h"

#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace metalearn_ext {

namespace {

void check_mix(const at::Tensor& mix, int64_t T, int64_t k, const char* op, const char* arg) {
  const bool ok = mix.sizes() == at::IntArrayRef({k, k}) || mix.sizes() == at::IntArrayRef({T, k, k});
  METALEARN_CHECK_ARG(ok, op, arg,
                      "of shape (k, k) = " + shape_str({k, k}) + " or (T, k, k) = " + shape_str({T, k, k}) +
                          " (k states, T copies from weight)",
                      shape_str(mix.sizes()));
}

// "(2, batch, 5, 3)": the batch size is free.
std::string batch_shape_str(int64_t T, int64_t n, int64_t k) {
  return "(" + std::to_string(T) + ", batch, " + std::to_string(n) + ", " + std::to_string(k) + ")";
}

void check_weight(const at::Tensor& weight, const char* op) {
  METALEARN_CHECK_ARG(weight.dim() == 4 && weight.numel() > 0, op, "weight",
                      "a non-empty tensor of shape (T, I, J, k)", shape_str(weight.sizes()));
  check_floating(weight, op, "weight");
}

void check_per_copy_scalar(const at::Tensor& x, int64_t T, const char* op, const char* arg) {
  METALEARN_CHECK_ARG(x.sizes() == at::IntArrayRef({T}), op, arg, "of shape (T,) = " + shape_str({T}),
                      shape_str(x.sizes()));
}

// The finiteness of decay and lr, once their dtype and device are known to be weight's.
void check_finite(const at::Tensor& x, const char* op, const char* arg) {
  if (x.is_cpu()) {  // a few values: a loop, not three tensor ops
    const auto v = x.to(at::kDouble).contiguous();
    const double* d = v.const_data_ptr<double>();
    if (std::all_of(d, d + v.numel(), [](double e) { return std::isfinite(e); })) return;
  } else if (at::isfinite(x).all().item<bool>()) {
    return;
  }
  const auto values = x.to(at::kDouble).cpu().contiguous();
  std::string got = "[";
  for (int64_t i = 0; i < values.numel(); ++i) got += (i ? ", " : "") + std::to_string(values.data_ptr<double>()[i]);
  METALEARN_CHECK_ARG(false, op, arg, "finite", got + "]");
}

// mix as (Tm, k, k) contiguous, Tm = 1 (shared) or T, for the products.
at::Tensor mix3(const at::Tensor& mix) { return (mix.dim() == 2 ? mix.unsqueeze(0) : mix).contiguous(); }

// mix broadcastable against (T, batch, n, k) states in a matmul: (k, k) or (T, 1, k, k).
at::Tensor mix4(const at::Tensor& mix) { return mix.dim() == 2 ? mix : mix.unsqueeze(1); }

// The k×k contractions below are GEMMs with an inner or outer size of k, for which at::matmul costs tens of
// µs at BLUR's sizes on CPU (k = 2, a few thousand rows); there they are one pass over the states instead,
// unrolled for the small k (K > 0: k = K known at compile time; K = 0: any k).

template <typename T, int K>
void mix_rows(const T* __restrict x, T* __restrict out, int64_t rows, const T* mt_in, int64_t k) {
  constexpr int kMax = K > 0 ? K * K : 1;
  T local[kMax];
  const T* mt = mt_in;
  if constexpr (K > 0) {
    for (int i = 0; i < K * K; ++i) local[i] = mt_in[i];
    mt = local;
  }
  const int64_t kk = K > 0 ? K : k;
  for (int64_t r = 0; r < rows; ++r, x += kk, out += kk)
    for (int64_t c = 0; c < kk; ++c) {
      T acc = 0;
      for (int64_t d = 0; d < kk; ++d) acc += mt[c * kk + d] * x[d];
      out[c] = acc;
    }
}

template <typename T, int K>
void outer_rows(const T* __restrict x, const T* __restrict y, T* __restrict out, int64_t rows, int64_t k) {
  const int64_t kk = K > 0 ? K : k;
  if constexpr (K > 0) {
    T acc[K * K] = {};
    for (int64_t r = 0; r < rows; ++r, x += K, y += K)
      for (int c = 0; c < K; ++c)
        for (int d = 0; d < K; ++d) acc[c * K + d] += x[c] * y[d];
    for (int i = 0; i < K * K; ++i) out[i] += acc[i];
  } else {
    for (int64_t r = 0; r < rows; ++r, x += kk, y += kk)
      for (int64_t c = 0; c < kk; ++c)
        for (int64_t d = 0; d < kk; ++d) out[c * kk + d] += x[c] * y[d];
  }
}

// fn.template operator()<K>() with K = k for k in 2..4, else K = 0.
template <class Fn>
void with_small_k(int64_t k, const Fn& fn) {
  switch (k) {
    case 2: return fn.template operator()<2>();
    case 3: return fn.template operator()<3>();
    case 4: return fn.template operator()<4>();
    default: return fn.template operator()<0>();
  }
}

// x (T, ..., k) with its states mixed: out[t,..,c] = Σ_d m[c,d]·x[t,..,d] with m = mix (k, k) or mix[t]
// (T, k, k); transpose_mix: m = mixᵀ. Contiguous.
at::Tensor mix_last(const at::Tensor& x, const at::Tensor& mix, bool transpose_mix) {
  if (!x.is_cpu()) {
    const auto m = mix4(mix);
    return at::matmul(x, transpose_mix ? m : m.transpose(-1, -2)).contiguous();
  }
  const auto xc = x.contiguous();
  const auto m = mix3(mix);
  const int64_t k = xc.size(-1), T = xc.size(0), rows = xc.numel() / (T * k), m_t = m.size(0) > 1 ? k * k : 0;
  auto out = at::empty_like(xc);
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "blur_mix_last", [&] {
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    std::vector<scalar_t> mt(k * k);  // m as used: mt[c·k + d] multiplies x[d] into out[c]
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t* mp = m.const_data_ptr<scalar_t>() + t * m_t;
      for (int64_t c = 0; c < k; ++c)
        for (int64_t d = 0; d < k; ++d) mt[c * k + d] = transpose_mix ? mp[d * k + c] : mp[c * k + d];
      with_small_k(k, [&]<int K>() { mix_rows<scalar_t, K>(xp + t * rows * k, op + t * rows * k, rows, mt.data(), k); });
    }
  });
  return out;
}

// Σ over everything but the last axis of x[.., c] y[.., d] → (k, k), or per copy (T, k, k).
at::Tensor mix_grad(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mix) {
  const int64_t k = x.size(-1), T = x.size(0);
  if (!x.is_cpu()) {
    if (mix.dim() == 2) return at::matmul(x.reshape({-1, k}).t(), y.reshape({-1, k}));
    return at::matmul(x.reshape({T, -1, k}).transpose(1, 2), y.reshape({T, -1, k}));
  }
  const auto xc = x.contiguous();
  const auto yc = y.contiguous();
  const int64_t rows = xc.numel() / (T * k);
  auto out = at::zeros(mix.dim() == 2 ? std::vector<int64_t>{k, k} : std::vector<int64_t>{T, k, k}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "blur_mix_grad", [&] {
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* yp = yc.const_data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      scalar_t* o = out.mutable_data_ptr<scalar_t>() + (mix.dim() == 2 ? 0 : t * k * k);
      with_small_k(k, [&]<int K>() { outer_rows<scalar_t, K>(xp + t * rows * k, yp + t * rows * k, o, rows, k); });
    }
  });
  return out;
}

}  // namespace

void check_blur_propagate_args(const at::Tensor& a, const at::Tensor& weight, const at::Tensor& mix, bool transpose,
                               const char* op) {
  check_weight(weight, op);
  const int64_t T = weight.size(0), I = weight.size(1), J = weight.size(2), k = weight.size(3);
  const int64_t n = transpose ? J : I;
  const char* side = transpose ? "J" : "I";
  const bool a_ok = a.dim() == 4 && a.size(0) == T && a.size(2) == n && a.size(3) == k && a.size(1) >= 1;
  METALEARN_CHECK_ARG(a_ok, op, "a",
                      std::string("of shape (T, batch, ") + side + ", k) = " + batch_shape_str(T, n, k) +
                          " (transpose=" + (transpose ? "True" : "False") + ", T, " + side + ", k from weight)",
                      shape_str(a.sizes()));
  check_mix(mix, T, k, op, "mix");
  check_floating(a, op, "a");
  check_same_dtype_device(weight, a, op, "weight", "a");
  check_same_dtype_device(mix, a, op, "mix", "a");
}

void check_blur_hebbian_args(const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
                             const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay,
                             const at::Tensor& lr, const char* op) {
  check_weight(weight, op);
  const int64_t T = weight.size(0), I = weight.size(1), J = weight.size(2), k = weight.size(3);
  const bool pre_ok = pre.dim() == 4 && pre.size(0) == T && pre.size(2) == I && pre.size(3) == k && pre.size(1) >= 1;
  METALEARN_CHECK_ARG(pre_ok, op, "pre", "of shape (T, batch, I, k) = " + batch_shape_str(T, I, k) +
                      " (T, I, k from weight)", shape_str(pre.sizes()));
  const int64_t B = pre.size(1);
  METALEARN_CHECK_ARG(post.sizes() == at::IntArrayRef({T, B, J, k}), op, "post",
                      "of shape (T, batch, J, k) = " + shape_str({T, B, J, k}) + " (batch from pre, T, J, k from weight)",
                      shape_str(post.sizes()));
  check_mix(pre_mix, T, k, op, "pre_mix");
  check_mix(post_mix, T, k, op, "post_mix");
  check_per_copy_scalar(decay, T, op, "decay");
  check_per_copy_scalar(lr, T, op, "lr");
  check_same_dtype_device(pre, weight, op, "pre", "weight");
  check_same_dtype_device(post, weight, op, "post", "weight");
  check_same_dtype_device(pre_mix, weight, op, "pre_mix", "weight");
  check_same_dtype_device(post_mix, weight, op, "post_mix", "weight");
  check_same_dtype_device(decay, weight, op, "decay", "weight");
  check_same_dtype_device(lr, weight, op, "lr", "weight");
  check_finite(decay, op, "decay");
  check_finite(lr, op, "lr");
}

at::Tensor blur_propagate_forward(const at::Tensor& a, const at::Tensor& weight, const at::Tensor& mix,
                                  bool transpose, const BlurProducts& products) {
  check_blur_propagate_args(a, weight, mix, transpose, "blur_propagate");
  const int64_t T = weight.size(0), I = weight.size(1), J = weight.size(2), k = weight.size(3), B = a.size(1);
  const auto w = weight.contiguous();
  if (transpose) return products.dot(a.contiguous(), mix3(mix), w);  // (T,B,I,k)
  return products.pattern(a, mix3(mix), w.view({T, I, J * k}), {}).view({T, B, J, k});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> blur_propagate_backward(const at::Tensor& grad, const at::Tensor& a,
                                                                       const at::Tensor& weight, const at::Tensor& mix,
                                                                       bool transpose, const BlurProducts& products) {
  const char* op = "blur_propagate_backward";
  check_blur_propagate_args(a, weight, mix, transpose, op);
  const int64_t T = weight.size(0), I = weight.size(1), J = weight.size(2), k = weight.size(3), B = a.size(1);
  const auto out_shape = transpose ? std::vector<int64_t>{T, B, I, k} : std::vector<int64_t>{T, B, J, k};
  METALEARN_CHECK_ARG(grad.sizes() == at::IntArrayRef(out_shape), op, "grad",
                      "of shape " + shape_str(out_shape) + " like the output", shape_str(grad.sizes()));
  check_same_dtype_device(grad, a, op, "grad", "a");
  const auto w = weight.contiguous();
  const auto g = grad.contiguous();
  at::Tensor grad_m, grad_w;  // grad_m: gradient of the mixed states mix·a, shaped like a
  if (!transpose) {
    grad_m = products.dot(g, at::Tensor(), w);                                           // Σ_j w[i,j,c] g[b,j,c]
    grad_w = products.pattern(a.permute({0, 2, 1, 3}), mix3(mix), g.view({T, B, J * k}), {});  // Σ_b m[b,i,c] g[b,j,c]
  } else {
    grad_m = products.pattern(g, at::Tensor(), w.view({T, I, J * k}), {}).view({T, B, J, k});  // Σ_i g[b,i,c] w[i,j,c]
    const auto m = mix_last(a, mix, false);
    grad_w = products.pattern(g.permute({0, 2, 1, 3}), at::Tensor(), m.view({T, B, J * k}), {});  // Σ_b g[b,i,c] m[b,j,c]
  }
  return {mix_last(grad_m, mix, true), grad_w.view({T, I, J, k}), mix_grad(grad_m, a, mix)};
}

namespace {

// q[t,b,j,c] = Σ_d post_mix[c,d] post[t,b,j,d], contiguous.
at::Tensor mixed_post(const at::Tensor& post, const at::Tensor& post_mix) {
  return mix_last(post, post_mix, false);
}

// Σ_b q[t,b,n]² (T,N) for q (T,B,...) on CPU, in one pass: Oja's term, in the forward and the backward.
at::Tensor batch_square_sum_cpu(const at::Tensor& q) {
  const int64_t T = q.size(0), B = q.size(1), N = q.numel() / (T * B);
  const auto qc = q.contiguous();
  auto out = at::zeros({T, N}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "blur_batch_square_sum", [&] {
    for (int64_t t = 0; t < T; ++t) {
      scalar_t* o = out.mutable_data_ptr<scalar_t>() + t * N;
      for (int64_t b = 0; b < B; ++b) {
        const scalar_t* qb = qc.const_data_ptr<scalar_t>() + (t * B + b) * N;
        for (int64_t n = 0; n < N; ++n) o[n] += qb[n] * qb[n];
      }
    }
  });
  return out;
}

}  // namespace

at::Tensor blur_hebbian_forward(const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
                                const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay,
                                const at::Tensor& lr, bool normalize, bool oja, const BlurProducts& products) {
  check_blur_hebbian_args(weight, pre, post, pre_mix, post_mix, decay, lr, "blur_hebbian");
  const int64_t T = weight.size(0), I = weight.size(1), J = weight.size(2), k = weight.size(3), B = pre.size(1);
  const int64_t N = J * k;
  const auto q = mixed_post(post, post_mix);
  HebbianEpilogue epi;
  epi.weight = weight.contiguous().view({T, I, N});
  // Decay and Oja's term scale the old synapse alike: alpha = decay − lr·Σ_b q².
  if (oja && q.is_cpu()) {  // one pass over q and one over alpha instead of four tensor ops
    epi.alpha = batch_square_sum_cpu(q);
    const auto dc = decay.contiguous();
    const auto lc = lr.contiguous();
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "blur_hebbian_oja_alpha", [&] {
      for (int64_t t = 0; t < T; ++t) {
        scalar_t* a = epi.alpha.mutable_data_ptr<scalar_t>() + t * N;
        const scalar_t d = dc.const_data_ptr<scalar_t>()[t], l = lc.const_data_ptr<scalar_t>()[t];
        for (int64_t n = 0; n < N; ++n) a[n] = d - l * a[n];
      }
    });
  } else {
    epi.alpha = oja ? decay.view({T, 1}) - lr.view({T, 1}) * q.square().sum(1).view({T, N})
                    : decay.view({T, 1}).expand({T, N});
  }
  epi.lr = lr;
  epi.normalize = normalize;
  // p[t,b,i,c] = Σ_e pre[t,b,i,e] pre_mix[e,c]: the product mixes with pre_mixᵀ.
  const auto pre_mix_t = mix3(pre_mix).transpose(1, 2).contiguous();
  return products.pattern(pre.permute({0, 2, 1, 3}), pre_mix_t, q.view({T, B, N}), epi).view({T, I, J, k});
}

namespace {

// The elementwise part of the Hebbian backward on CPU (blur_hebbian_backward below, tensor ops elsewhere):
// with alpha = decay − lr·Σ_b q² (oja) or decay, u = alpha·w + lr·hebb, out = u / ‖u[t,·,n]‖ (normalize):
// grad_u = r·(grad − out·Σ_i grad·out) (normalize) or grad; gw_sum[t,n] = Σ_i grad_u·w.
struct HebbianBackwardEpilogue {
  at::Tensor grad_w;     // (T,I,J,k) alpha·grad_u
  at::Tensor grad_u_lr;  // (T,I,J,k) lr·grad_u, contiguous
  at::Tensor gw_sum;     // (T,N)
  at::Tensor grad_decay, grad_lr;  // (T,)
};

HebbianBackwardEpilogue hebbian_backward_epilogue_cpu(const at::Tensor& grad, const at::Tensor& w,
                                                      const at::Tensor& hebb, const at::Tensor& q,
                                                      const at::Tensor& decay, const at::Tensor& lr, bool normalize,
                                                      bool oja) {
  const int64_t T = w.size(0), I = w.size(1), N = w.size(2) * w.size(3);
  const auto g = grad.contiguous();
  const auto hc = hebb.contiguous();
  const auto q_sq = oja ? batch_square_sum_cpu(q) : at::zeros({T, N}, w.options());  // (T,N)
  const auto dc = decay.contiguous();
  const auto lc = lr.contiguous();
  HebbianBackwardEpilogue e;
  e.grad_w = at::empty_like(w);
  e.grad_u_lr = at::empty_like(w);
  e.gw_sum = at::empty({T, N}, w.options());
  e.grad_decay = at::empty({T}, w.options());
  e.grad_lr = at::empty({T}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "blur_hebbian_backward_epilogue", [&] {
    using S = scalar_t;
    std::vector<S> alpha(N), r(N), dotg(N);
    for (int64_t t = 0; t < T; ++t) {
      const S dec = dc.const_data_ptr<S>()[t], l = lc.const_data_ptr<S>()[t];
      const S* wt = w.const_data_ptr<S>() + t * I * N;
      const S* ht = hc.const_data_ptr<S>() + t * I * N;
      const S* gt = g.const_data_ptr<S>() + t * I * N;
      S* gwt = e.grad_w.mutable_data_ptr<S>() + t * I * N;
      S* gut = e.grad_u_lr.mutable_data_ptr<S>() + t * I * N;
      S* gws = e.gw_sum.mutable_data_ptr<S>() + t * N;
      const S* qsq = q_sq.const_data_ptr<S>() + t * N;
      for (int64_t n = 0; n < N; ++n) alpha[n] = dec - l * qsq[n];
      if (normalize) {
        std::fill(r.begin(), r.end(), S(0));
        std::fill(dotg.begin(), dotg.end(), S(0));
        for (int64_t i = 0; i < I; ++i) {
          const S* wi = wt + i * N;
          const S* hi = ht + i * N;
          const S* gi = gt + i * N;
          for (int64_t n = 0; n < N; ++n) {
            const S u = alpha[n] * wi[n] + l * hi[n];
            r[n] += u * u;
            dotg[n] += gi[n] * u;
          }
        }
        for (int64_t n = 0; n < N; ++n) {
          r[n] = S(1) / std::sqrt(r[n] + static_cast<S>(kBlurNormEps));
          dotg[n] *= r[n];  // Σ_i grad·out
        }
      }
      std::fill(gws, gws + N, S(0));
      S lrsum = 0;
      for (int64_t i = 0; i < I; ++i) {
        const S* wi = wt + i * N;
        const S* hi = ht + i * N;
        const S* gi = gt + i * N;
        S* gwi = gwt + i * N;
        S* gui = gut + i * N;
        S acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          S gu = gi[n];
          if (normalize) {
            const S out = (alpha[n] * wi[n] + l * hi[n]) * r[n];
            gu = r[n] * (gi[n] - out * dotg[n]);
          }
          gws[n] += gu * wi[n];
          acc += gu * hi[n];
          gwi[n] = alpha[n] * gu;
          gui[n] = l * gu;
        }
        lrsum += acc;
      }
      S dsum = 0, osum = 0;
      for (int64_t n = 0; n < N; ++n) {
        dsum += gws[n];
        osum += qsq[n] * gws[n];
      }
      e.grad_decay.mutable_data_ptr<S>()[t] = dsum;
      e.grad_lr.mutable_data_ptr<S>()[t] = oja ? lrsum - osum : lrsum;
    }
  });
  return e;
}

// grad_q −= 2·lr·q·gw_sum (Oja's term), in place; grad_q and q (T,B,N) contiguous.
void oja_post_grad_cpu(at::Tensor& grad_q, const at::Tensor& q, const at::Tensor& lr, const at::Tensor& gw_sum) {
  const int64_t T = q.size(0), B = q.size(1), N = q.numel() / (T * B);
  const auto qc = q.contiguous();
  const auto lc = lr.contiguous();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "blur_hebbian_oja_post_grad", [&] {
    using S = scalar_t;
    for (int64_t t = 0; t < T; ++t) {
      const S two_l = 2 * lc.const_data_ptr<S>()[t];
      const S* gws = gw_sum.const_data_ptr<S>() + t * N;
      for (int64_t b = 0; b < B; ++b) {
        const S* qb = qc.const_data_ptr<S>() + (t * B + b) * N;
        S* gb = grad_q.mutable_data_ptr<S>() + (t * B + b) * N;
        for (int64_t n = 0; n < N; ++n) gb[n] -= two_l * qb[n] * gws[n];
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> blur_hebbian_backward(
    const at::Tensor& grad, const at::Tensor& weight, const at::Tensor& pre, const at::Tensor& post,
    const at::Tensor& pre_mix, const at::Tensor& post_mix, const at::Tensor& decay, const at::Tensor& lr,
    bool normalize, bool oja, const BlurProducts& products) {
  const char* op = "blur_hebbian_backward";
  check_blur_hebbian_args(weight, pre, post, pre_mix, post_mix, decay, lr, op);
  const int64_t T = weight.size(0), I = weight.size(1), J = weight.size(2), k = weight.size(3), B = pre.size(1);
  const int64_t N = J * k;
  METALEARN_CHECK_ARG(grad.sizes() == weight.sizes(), op, "grad", "of shape (T, I, J, k) = " + shape_str(weight.sizes()),
                      shape_str(grad.sizes()));
  check_same_dtype_device(grad, weight, op, "grad", "weight");
  const auto w = weight.contiguous();
  const auto q = mixed_post(post, post_mix);                      // (T,B,J,k)
  const auto p = mix_last(pre, pre_mix, true);                    // (T,B,I,k)
  const auto hebb = products.pattern(p.permute({0, 2, 1, 3}), at::Tensor(), q.view({T, B, N}), {}).view({T, I, J, k});
  if (w.is_cpu()) {  // the elementwise part in two passes over the synapses instead of ~30 tensor ops
    const auto e = hebbian_backward_epilogue_cpu(grad, w, hebb, q, decay, lr, normalize, oja);
    const auto grad_p = products.dot(q, at::Tensor(), e.grad_u_lr);  // (T,B,I,k): lr Σ_j grad_u[i,j,c] q[b,j,c]
    auto grad_q = products.pattern(p, at::Tensor(), e.grad_u_lr.view({T, I, N}), {}).view({T, B, J, k});
    if (oja) oja_post_grad_cpu(grad_q, q, lr, e.gw_sum);
    return {e.grad_w,
            mix_last(grad_p, pre_mix, false),
            mix_last(grad_q, post_mix, true),
            mix_grad(pre, grad_p, pre_mix),
            mix_grad(grad_q, post, post_mix),
            e.grad_decay,
            e.grad_lr};
  }
  const auto lr4 = lr.view({T, 1, 1, 1});
  const auto q_sq = oja ? q.square().sum(1, true) : at::Tensor();  // (T,1,J,k)
  const auto alpha = oja ? decay.view({T, 1, 1, 1}) - lr4 * q_sq : decay.view({T, 1, 1, 1});
  const auto u = alpha * w + lr4 * hebb;
  at::Tensor grad_u = grad;
  if (normalize) {  // out = u·r, r = (Σ_i u² + eps)^(-1/2): grad_u = r·(grad − out·Σ_i grad·out)
    const auto r = at::rsqrt(u.square().sum(1, true) + kBlurNormEps);
    const auto out = u * r;
    grad_u = r * (grad - out * (grad * out).sum(1, true));
  }
  const auto grad_u_c = grad_u.contiguous();
  const auto gw_sum = (grad_u * w).sum(1, true);  // (T,1,J,k): Σ_i grad_u·w
  auto grad_lr = (grad_u * hebb).sum({1, 2, 3});
  if (oja) grad_lr = grad_lr - (q_sq * gw_sum).sum({1, 2, 3});
  const auto grad_p = products.dot(q, at::Tensor(), grad_u_c) * lr4;  // (T,B,I,k): lr Σ_j grad_u[i,j,c] q[b,j,c]
  auto grad_q = products.pattern(p, at::Tensor(), grad_u_c.view({T, I, N}), {}).view({T, B, J, k}) * lr4;
  if (oja) grad_q = grad_q - 2 * lr4 * q * gw_sum;
  return {alpha * grad_u,
          mix_last(grad_p, pre_mix, false),
          mix_last(grad_q, post_mix, true),
          mix_grad(pre, grad_p, pre_mix),
          mix_grad(grad_q, post, post_mix),
          gw_sum.sum({1, 2, 3}),
          grad_lr};
}

}  // namespace metalearn_ext
