// metalearn_ext::mann_episode on the CPU: MANN's whole recurrence over an episode (specs/memory_np.md §1) in one
// call, and its backward through time in one more.
//
// Per step s the LSTM cell (gates from the precomputed input part plus [r_{s−1} ; h_{s−1}]·W_recᵀ, laid out
// [i, f, o, g]), the heads (tanh keys, tanh add vectors, sigmoid write gates from h_s), and one LRUA memory step
// (cpu/mann_memory_step_core.h) reading r_s. The point is what is not here: no autograd node, no Python and no
// dispatcher per step beyond the few ATen calls a step needs: its three products (at::addmm / at::mm on views of
// episode-long buffers) and the transcendental functions (ATen's vectorized ones). The rest are plain loops on
// raw pointers. The backward keeps what the
// forward computed (the memory after every step included: (L+1)·B·S·W values), walks the steps backwards, and
// forms the weight gradients as two products over the whole episode instead of one small product a step.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <iterator>
#include <tuple>
#include <vector>

#include "cpu/mann_memory_step_core.h"

namespace {

using at::Tensor;
using metalearn_ext::cpu::MannStepArgs;
using metalearn_ext::cpu::mann_step_run;

// Everything one forward computed that its backward reads, each (L, B, ·) with the step outermost so that a
// step's slice is contiguous; memory, usage and read_weights are (L+1, B, ·): the state before every step (the
// memory after step s, at [s+1], spares the backward the step's write; the slots, its choice of rows).
struct Saved {
  Tensor z;       // (L, B, HW+n): [r_{s−1} ; h_{s−1}], the recurrent input of step s
  Tensor act;     // (L, B, 4n): sigmoid(i), sigmoid(f), sigmoid(o), tanh(g)
  Tensor cell;    // (L+1, B, n): c_{s−1} at [s], c_s at [s+1]
  Tensor tanh_c;  // (L, B, n)
  Tensor h;       // (L, B, n)
  Tensor keys, add;  // (L, B, HW) after tanh
  Tensor alpha;   // (L, B, H) after sigmoid
  Tensor memory;  // (L+1, B, S, W)
  Tensor usage;   // (L+1, B, S)
  Tensor read_weights;  // (L+1, B, H, S)
  Tensor reads;   // (L, B, HW)
  Tensor slots;   // (L, B, H) int64: the least-used slots each step wrote to
};

// Every field of Saved once, in one order: what the autograd node saves after its inputs and reads back.
constexpr Tensor Saved::*kSavedFields[] = {&Saved::z,      &Saved::act,   &Saved::cell,         &Saved::tanh_c,
                                           &Saved::h,      &Saved::keys,  &Saved::add,          &Saved::alpha,
                                           &Saved::memory, &Saved::usage, &Saved::read_weights, &Saved::reads,
                                           &Saved::slots};

void append_saved(const Saved& sv, std::vector<Tensor>& out) {
  for (auto field : kSavedFields) out.push_back(sv.*field);
}

Saved saved_from(const std::vector<Tensor>& t, size_t first) {
  TORCH_CHECK(t.size() == first + std::size(kSavedFields), "mann_episode: ", t.size() - first,
              " saved buffers, expected ", std::size(kSavedFields));
  Saved sv;
  for (auto field : kSavedFields) sv.*field = t[first++];
  return sv;
}

// The episode's buffers are megabytes (the memory after every step alone is (L+1)·B·S·W values: 16 MB at MANN's
// sizes). Fresh from the allocator each call, glibc maps them anew and every page faults in again: ~15 ms of a
// 45 ms training iteration, measured. So each thread keeps the last call's buffers and hands one out again once
// nothing else holds it (the autograd graph that saved it, an output view): no reuse while it is still in use.
enum Buffer { kZ, kAct, kCell, kTanhC, kH, kKeys, kAdd, kAlpha, kMemory, kUsage, kReadWeights, kReads, kSlots,
              kGradH, kGradReads, kDGates, kDHead, kBuffers };

Tensor pooled(Buffer slot, at::IntArrayRef sizes, const at::TensorOptions& opt) {
  thread_local std::vector<Tensor> pool(kBuffers);
  Tensor& t = pool[slot];
  if (t.defined() && t.use_count() == 1 && t.storage().use_count() == 1 && t.sizes() == sizes &&
      t.dtype() == opt.dtype() && t.device() == opt.device()) {
    return t;
  }
  t = at::empty(sizes, opt);
  return t;
}

struct Sizes {
  int64_t B, L, n, H, S, W;
};

void check_args(const Tensor& x_gates, const Tensor& w_rec, const Tensor& w_head, const Tensor& b_head, int64_t heads,
                int64_t slots, Sizes& z) {
  // ops/mann_episode/shapes.py checks the same with fuller messages; these guard the raw loops.
  TORCH_CHECK(x_gates.dim() == 3 && x_gates.size(2) % 4 == 0 && x_gates.size(0) > 0 && x_gates.size(1) > 0,
              "mann_episode: x_gates must be a non-empty tensor of shape (B, L, 4n), got ", x_gates.sizes());
  z.B = x_gates.size(0), z.L = x_gates.size(1), z.n = x_gates.size(2) / 4;
  TORCH_CHECK(heads >= 1 && slots >= heads, "mann_episode: need 1 <= heads <= slots, got heads=", heads,
              ", slots=", slots);
  z.H = heads, z.S = slots;
  TORCH_CHECK(w_rec.dim() == 2 && w_rec.size(0) == 4 * z.n && w_rec.size(1) > z.n && (w_rec.size(1) - z.n) % heads == 0,
              "mann_episode: w_rec must be of shape (4n, H·W + n) = (", 4 * z.n, ", H·W + ", z.n, "), got ",
              w_rec.sizes());
  z.W = (w_rec.size(1) - z.n) / heads;
  const int64_t hw = z.H * z.W;
  TORCH_CHECK(w_head.dim() == 2 && w_head.size(0) == 2 * hw + z.H && w_head.size(1) == z.n,
              "mann_episode: w_head must be of shape (2·H·W + H, n) = (", 2 * hw + z.H, ", ", z.n, "), got ",
              w_head.sizes());
  TORCH_CHECK(b_head.dim() == 1 && b_head.size(0) == 2 * hw + z.H, "mann_episode: b_head must be of shape (",
              2 * hw + z.H, "), got ", b_head.sizes());
  for (const Tensor* t : {&w_rec, &w_head, &b_head}) {
    TORCH_CHECK(t->scalar_type() == x_gates.scalar_type() && t->device() == x_gates.device(),
                "mann_episode: every tensor must have x_gates' dtype and device");
  }
  TORCH_CHECK(x_gates.scalar_type() == at::kFloat || x_gates.scalar_type() == at::kDouble,
              "mann_episode: takes float32 or float64, got ", x_gates.scalar_type());
}

// The inputs of step s's memory update: the state before it (memory, usage, read weights at index `state` of the
// saved buffers) and the heads of step s.
template <typename T>
MannStepArgs<T> step_inputs(const Saved& sv, const Sizes& z, int64_t state, int64_t s, double gamma) {
  const int64_t B = z.B, H = z.H, S = z.S, W = z.W;
  MannStepArgs<T> m{};
  m.M = sv.memory.const_data_ptr<T>() + state * B * S * W;
  m.u = sv.usage.const_data_ptr<T>() + state * B * S;
  m.rw = sv.read_weights.const_data_ptr<T>() + state * B * H * S;
  m.K = sv.keys.const_data_ptr<T>() + s * B * H * W;
  m.add = sv.add.const_data_ptr<T>() + s * B * H * W;
  m.alpha = sv.alpha.const_data_ptr<T>() + s * B * H;
  m.gamma = static_cast<T>(gamma);
  m.S = S, m.H = H, m.W = W;
  return m;
}

// The forward; with `keep` false only the outputs are meaningful (the memory ping-pongs in two buffers).
// Returns (h (B, L, n), reads (B, L, HW)) as views of the saved (L, B, ·) buffers.
Saved forward_cpu(const Tensor& x_gates_in, const Tensor& w_rec, const Tensor& w_head, const Tensor& b_head,
                  const Sizes& z, double gamma, double memory_init, bool keep) {
  const int64_t B = z.B, L = z.L, n = z.n, H = z.H, S = z.S, W = z.W, hw = H * W;
  const auto opt = x_gates_in.options();
  const Tensor xg = x_gates_in.transpose(0, 1);  // (L, B, 4n), a view: addmm reads it strided
  const Tensor w_rec_t = w_rec.t(), w_head_t = w_head.t();
  Saved sv;
  sv.z = pooled(kZ, {L, B, hw + n}, opt);
  sv.z[0].zero_();
  sv.act = pooled(kAct, {L, B, 4 * n}, opt);
  sv.cell = pooled(kCell, {L + 1, B, n}, opt);
  sv.cell[0].zero_();
  sv.tanh_c = pooled(kTanhC, {L, B, n}, opt);
  sv.h = pooled(kH, {L, B, n}, opt);
  sv.keys = pooled(kKeys, {L, B, hw}, opt);
  sv.add = pooled(kAdd, {L, B, hw}, opt);
  sv.alpha = pooled(kAlpha, {L, B, H}, opt);
  const int64_t states = keep ? L + 1 : 2;
  sv.memory = pooled(kMemory, {states, B, S, W}, opt);
  sv.memory[0].fill_(memory_init);
  sv.usage = pooled(kUsage, {states, B, S}, opt);
  sv.usage[0].zero_();
  sv.read_weights = pooled(kReadWeights, {states, B, H, S}, opt);
  sv.read_weights[0].zero_();
  sv.reads = pooled(kReads, {L, B, hw}, opt);
  if (keep) sv.slots = pooled(kSlots, {L, B, H}, opt.dtype(at::kLong));  // without keep, no step's choice is read
  Tensor head = at::empty({B, 2 * hw + H}, opt);
  Tensor write_weights = at::empty({B, H, S}, opt);
  AT_DISPATCH_FLOATING_TYPES(x_gates_in.scalar_type(), "mann_episode", [&] {
    using T = scalar_t;
    const int64_t zw = hw + n;  // the row width of z
    const T* xg = x_gates_in.const_data_ptr<T>();
    const int64_t xs_b = x_gates_in.stride(0), xs_l = x_gates_in.stride(1), xs_g = x_gates_in.stride(2);
    const Sizes& sizes = z;
    T *zbuf = sv.z.mutable_data_ptr<T>(), *act = sv.act.mutable_data_ptr<T>(), *cell = sv.cell.mutable_data_ptr<T>();
    T *tanh_c = sv.tanh_c.mutable_data_ptr<T>(), *hbuf = sv.h.mutable_data_ptr<T>();
    T *mem = sv.memory.mutable_data_ptr<T>(), *usage = sv.usage.mutable_data_ptr<T>();
    T *rw = sv.read_weights.mutable_data_ptr<T>(), *reads = sv.reads.mutable_data_ptr<T>();
    T* ww = write_weights.mutable_data_ptr<T>();
    int64_t* slots = keep ? sv.slots.mutable_data_ptr<int64_t>() : nullptr;
    for (int64_t s = 0; s < L; ++s) {
      T* a = act + s * B * 4 * n;
      for (int64_t b = 0; b < B; ++b) {  // the gates start as the input part, then += z_s · W_recᵀ
        const T* x = xg + b * xs_b + s * xs_l;
        T* ab = a + b * 4 * n;
        for (int64_t j = 0; j < 4 * n; ++j) ab[j] = x[j * xs_g];
      }
      Tensor act_s = sv.act[s];
      act_s.addmm_(sv.z[s], w_rec_t);
      act_s.narrow(1, 0, 3 * n).sigmoid_();
      act_s.narrow(1, 3 * n, n).tanh_();
      const T* c_prev = cell + s * B * n;
      T* c = cell + (s + 1) * B * n;
      for (int64_t b = 0; b < B; ++b) {
        const T* ab = a + b * 4 * n;
        for (int64_t j = 0; j < n; ++j) c[b * n + j] = ab[n + j] * c_prev[b * n + j] + ab[j] * ab[3 * n + j];
      }
      Tensor tanh_c_s = sv.tanh_c[s];
      at::tanh_out(tanh_c_s, sv.cell[s + 1]);
      const T* tc = tanh_c + s * B * n;
      T* h = hbuf + s * B * n;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < n; ++j) h[b * n + j] = a[b * 4 * n + 2 * n + j] * tc[b * n + j];
      at::addmm_out(head, b_head, sv.h[s], w_head_t);
      Tensor keys_s = sv.keys[s], add_s = sv.add[s], alpha_s = sv.alpha[s];
      at::tanh_out(keys_s, head.narrow(1, 0, hw));
      at::tanh_out(add_s, head.narrow(1, hw, hw));
      at::sigmoid_out(alpha_s, head.narrow(1, 2 * hw, H));
      const int64_t cur = keep ? s : s % 2, nxt = keep ? s + 1 : (s + 1) % 2;
      MannStepArgs<T> m = step_inputs<T>(sv, sizes, cur, s, gamma);
      m.M_out = mem + nxt * B * S * W;
      m.rw_out = rw + nxt * B * H * S;
      m.reads = reads + s * B * hw;
      m.u_out = usage + nxt * B * S;
      m.ww = ww;
      m.slots_out = keep ? slots + s * B * H : nullptr;
      mann_step_run(m, B, /*backward=*/false);
      if (s + 1 < L) {  // z_{s+1} = [r_s ; h_s]
        T* zn = zbuf + (s + 1) * B * zw;
        const T* r = reads + s * B * hw;
        for (int64_t b = 0; b < B; ++b) {
          std::copy(r + b * hw, r + (b + 1) * hw, zn + b * zw);
          std::copy(h + b * n, h + (b + 1) * n, zn + b * zw + hw);
        }
      }
    }
  });
  return sv;
}

// Gradients w.r.t. (x_gates (B, L, 4n), w_rec, w_head, b_head) from those of h and reads (B, L, ·; undefined:
// zero) and the forward's saved buffers.
std::tuple<Tensor, Tensor, Tensor, Tensor> backward_cpu(const Tensor& grad_h_in, const Tensor& grad_reads_in,
                                                        const Tensor& w_rec, const Tensor& w_head, const Sizes& z,
                                                        double gamma, const Saved& sv) {
  const int64_t B = z.B, L = z.L, n = z.n, H = z.H, S = z.S, W = z.W, hw = H * W;
  const auto opt = w_rec.options();
  // the upstream gradients step-major (L, B, ·); undefined: zero
  auto step_major = [&](const Tensor& g, Buffer slot, int64_t width) {
    Tensor t = pooled(slot, {L, B, width}, opt);
    if (g.defined()) {
      t.copy_(g.transpose(0, 1));
    } else {
      t.zero_();
    }
    return t;
  };
  const Tensor grad_h = step_major(grad_h_in, kGradH, n), grad_reads = step_major(grad_reads_in, kGradReads, hw);
  Tensor dgates = pooled(kDGates, {L, B, 4 * n}, opt);
  Tensor dhead = pooled(kDHead, {L, B, 2 * hw + H}, opt);
  // what flows back into step s from step s+1: memory, usage, read weights, the cell, and through the next
  // step's gates r_s and h_s (gz = [g r_s ; g h_s])
  Tensor gM = at::zeros({B, S, W}, opt), gu = at::zeros({B, S}, opt), grw = at::zeros({B, H, S}, opt);
  Tensor gM2 = at::empty_like(gM), gu2 = at::empty_like(gu), grw2 = at::empty_like(grw);
  Tensor gww = at::zeros({B, H, S}, opt);  // write weights leave the step only through usage (inside it)
  Tensor gK = at::empty({B, H, W}, opt), gadd = at::empty({B, H, W}, opt), galpha = at::empty({B, H}, opt);
  Tensor gc = at::zeros({B, n}, opt), gz = at::zeros({B, hw + n}, opt);
  Tensor greads = at::empty({B, hw}, opt), gh = at::empty({B, n}, opt);
  AT_DISPATCH_FLOATING_TYPES(w_rec.scalar_type(), "mann_episode_backward", [&] {
    using T = scalar_t;
    const int64_t zw = hw + n, hd = 2 * hw + H;
    const T *ghs = grad_h.const_data_ptr<T>(), *grs = grad_reads.const_data_ptr<T>();
    const T *act = sv.act.const_data_ptr<T>(), *cell = sv.cell.const_data_ptr<T>(), *tanh_c = sv.tanh_c.const_data_ptr<T>();
    const T *keys = sv.keys.const_data_ptr<T>(), *add = sv.add.const_data_ptr<T>(), *alpha = sv.alpha.const_data_ptr<T>();
    const T* mem = sv.memory.const_data_ptr<T>();
    const int64_t* slots = sv.slots.const_data_ptr<int64_t>();
    T *dg_all = dgates.mutable_data_ptr<T>(), *dh_all = dhead.mutable_data_ptr<T>();
    T *gzp = gz.mutable_data_ptr<T>(), *gcp = gc.mutable_data_ptr<T>(), *ghp = gh.mutable_data_ptr<T>();
    T* gr = greads.mutable_data_ptr<T>();
    const T *gk = gK.const_data_ptr<T>(), *ga = gadd.const_data_ptr<T>(), *gal = galpha.const_data_ptr<T>();
    for (int64_t s = L - 1; s >= 0; --s) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < hw; ++j) gr[b * hw + j] = grs[(s * B + b) * hw + j] + gzp[b * zw + j];
      MannStepArgs<T> m = step_inputs<T>(sv, z, s, s, gamma);
      m.gM_out = gM.const_data_ptr<T>();
      m.grw_out = grw.const_data_ptr<T>();
      m.greads = gr;
      m.gu_out = gu.const_data_ptr<T>();
      m.gww = gww.const_data_ptr<T>();
      m.gM = gM2.mutable_data_ptr<T>();
      m.gu = gu2.mutable_data_ptr<T>();
      m.grw = grw2.mutable_data_ptr<T>();
      m.gK = gK.mutable_data_ptr<T>();
      m.gadd = gadd.mutable_data_ptr<T>();
      m.galpha = galpha.mutable_data_ptr<T>();
      m.slots_in = slots + s * B * H;  // the forward's choice and memory': nothing of the step recomputed
      m.M_out_in = mem + (s + 1) * B * S * W;
      mann_step_run(m, B, /*backward=*/true);
      std::swap(gM, gM2), std::swap(gu, gu2), std::swap(grw, grw2);
      T* d = dh_all + s * B * hd;
      {  // through tanh / tanh / sigmoid into the head's pre-activation
        const T *k = keys + s * B * hw, *ad = add + s * B * hw, *al = alpha + s * B * H;
        for (int64_t b = 0; b < B; ++b) {
          T* db = d + b * hd;
          for (int64_t j = 0; j < hw; ++j) {
            const T kv = k[b * hw + j], av = ad[b * hw + j];
            db[j] = gk[b * hw + j] * (T(1) - kv * kv);
            db[hw + j] = ga[b * hw + j] * (T(1) - av * av);
          }
          for (int64_t j = 0; j < H; ++j) {
            const T v = al[b * H + j];
            db[2 * hw + j] = gal[b * H + j] * v * (T(1) - v);
          }
        }
      }
      // gh = grad_h[s] + (from step s+1's gates) + dhead · W_head
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < n; ++j) ghp[b * n + j] = ghs[(s * B + b) * n + j] + gzp[b * zw + hw + j];
      gh.addmm_(dhead[s], w_head);
      T* dgs = dg_all + s * B * 4 * n;
      {  // the cell: c = f·c_prev + i·g, h = o·tanh(c)
        const T *a = act + s * B * 4 * n, *tc = tanh_c + s * B * n, *c_prev = cell + s * B * n;
        for (int64_t b = 0; b < B; ++b) {
          const T* ab = a + b * 4 * n;
          T* db = dgs + b * 4 * n;
          for (int64_t j = 0; j < n; ++j) {
            const int64_t e = b * n + j;
            const T i = ab[j], f = ab[n + j], o = ab[2 * n + j], g = ab[3 * n + j], t = tc[e];
            const T dc = gcp[e] + ghp[e] * o * (T(1) - t * t);
            db[j] = dc * g * i * (T(1) - i);
            db[n + j] = dc * c_prev[e] * f * (T(1) - f);
            db[2 * n + j] = ghp[e] * t * o * (T(1) - o);
            db[3 * n + j] = dc * i * (T(1) - g * g);
            gcp[e] = dc * f;
          }
        }
      }
      if (s > 0) at::mm_out(gz, dgates[s], w_rec);  // [g r ; g h] of step s−1
    }
  });
  // the weight gradients: one product over all L·B rows each
  Tensor dg = dgates.view({L * B, 4 * n}), dh = dhead.view({L * B, 2 * hw + H});
  Tensor grad_w_rec = at::mm(dg.t(), sv.z.view({L * B, hw + n}));
  Tensor grad_w_head = at::mm(dh.t(), sv.h.view({L * B, n}));
  Tensor grad_b_head = dh.sum(0);
  return {dgates.transpose(0, 1), grad_w_rec, grad_w_head, grad_b_head};
}

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

std::tuple<Tensor, Tensor> mann_episode_cpu(const Tensor& x_gates, const Tensor& w_rec, const Tensor& w_head,
                                            const Tensor& b_head, int64_t heads, int64_t slots, double gamma,
                                            double memory_init) {
  Sizes z{};
  check_args(x_gates, w_rec, w_head, b_head, heads, slots, z);
  const Saved sv = forward_cpu(x_gates, contiguous(w_rec), contiguous(w_head), contiguous(b_head), z, gamma,
                               memory_init, /*keep=*/false);
  return {sv.h.transpose(0, 1), sv.reads.transpose(0, 1)};
}

// The schema's backward (the registry's convention: recompute from the inputs), for opcheck, the double
// backward and any caller without the forward's buffers. The autograd node below keeps them instead.
std::tuple<Tensor, Tensor, Tensor, Tensor> mann_episode_backward_cpu(const Tensor& grad_h, const Tensor& grad_reads,
                                                                     const Tensor& x_gates, const Tensor& w_rec,
                                                                     const Tensor& w_head, const Tensor& b_head,
                                                                     int64_t heads, int64_t slots, double gamma,
                                                                     double memory_init) {
  Sizes z{};
  check_args(x_gates, w_rec, w_head, b_head, heads, slots, z);
  TORCH_CHECK(grad_h.sizes() == at::IntArrayRef({z.B, z.L, z.n}) &&
                  grad_reads.sizes() == at::IntArrayRef({z.B, z.L, z.H * z.W}),
              "mann_episode_backward: grad_h must be (B, L, n) and grad_reads (B, L, H·W)");
  const Tensor wr = contiguous(w_rec), wh = contiguous(w_head);
  const Saved sv = forward_cpu(x_gates, wr, wh, contiguous(b_head), z, gamma, memory_init, /*keep=*/true);
  auto g = backward_cpu(grad_h, grad_reads, wr, wh, z, gamma, sv);
  std::get<0>(g) = std::get<0>(g).contiguous();  // the fake's layout (a gradient shaped like x_gates)
  return g;
}

// ---- autograd: one node per episode, keeping the forward's buffers ----

using BackwardSig = std::tuple<Tensor, Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                               const Tensor&, const Tensor&, const Tensor&, int64_t,
                                                               int64_t, double, double);
using ForwardSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                                              int64_t, double, double);

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("metalearn_ext::mann_episode_backward", "")
                             .typed<BackwardSig>();
  return op;
}

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("metalearn_ext::mann_episode", "").typed<ForwardSig>();
  return op;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class MannEpisodeFunction : public torch::autograd::Function<MannEpisodeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x_gates, const Tensor& w_rec,
                               const Tensor& w_head, const Tensor& b_head, int64_t heads, int64_t slots, double gamma,
                               double memory_init) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["slots"] = slots;
    ctx->saved_data["gamma"] = gamma;
    ctx->saved_data["memory_init"] = memory_init;
    ctx->set_materialize_grads(false);
    // Real CPU tensors keep the forward's buffers; fake ones (torch.compile) go through the dispatcher and
    // recompute in the backward op.
    const bool direct = x_gates.is_cpu() && !x_gates.key_set().has(c10::DispatchKey::Python) &&
                        !w_rec.key_set().has(c10::DispatchKey::Python);
    ctx->saved_data["direct"] = direct;
    if (!direct) {
      ctx->save_for_backward({x_gates, w_rec, w_head, b_head});
      auto [h, r] = forward_op().call(x_gates, w_rec, w_head, b_head, heads, slots, gamma, memory_init);
      return {h, r};
    }
    Sizes z{};
    check_args(x_gates, w_rec, w_head, b_head, heads, slots, z);
    const Tensor wr = contiguous(w_rec), wh = contiguous(w_head);
    const Saved sv = forward_cpu(x_gates, wr, wh, contiguous(b_head), z, gamma, memory_init, /*keep=*/true);
    // the inputs, for a backward with create_graph=True (the backward op, differentiated through the reference);
    // wr and wh, the contiguous weights the direct backward multiplies by; then the forward's buffers
    variable_list saved{x_gates, w_rec, w_head, b_head, wr, wh};
    append_saved(sv, saved);
    ctx->save_for_backward(saved);
    ctx->saved_data["sizes"] = std::vector<int64_t>{z.B, z.L, z.n, z.H, z.S, z.W};
    return {sv.h.transpose(0, 1), sv.reads.transpose(0, 1)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(8);
    if (!grads[0].defined() && !grads[1].defined()) return result;
    const auto saved = ctx->get_saved_variables();
    const int64_t heads = ctx->saved_data["heads"].toInt(), slots = ctx->saved_data["slots"].toInt();
    const double gamma = ctx->saved_data["gamma"].toDouble(), memory_init = ctx->saved_data["memory_init"].toDouble();
    std::tuple<Tensor, Tensor, Tensor, Tensor> g;
    if (torch::autograd::GradMode::is_enabled() || !ctx->saved_data["direct"].toBool()) {
      // create_graph=True (the op's Python formula differentiates the reference) or fake tensors
      const Tensor& x = saved[0];
      auto full = [&](const Tensor& grad, int64_t width) {
        return grad.defined() ? grad : at::zeros({x.size(0), x.size(1), width}, x.options());
      };
      const int64_t n = x.size(2) / 4;
      const Tensor grad_h = full(grads[0], n), grad_r = full(grads[1], saved[1].size(1) - n);
      if (torch::autograd::GradMode::is_enabled()) {
        g = backward_op().call(grad_h, grad_r, saved[0], saved[1], saved[2], saved[3], heads, slots, gamma,
                               memory_init);
      } else {
        at::AutoDispatchBelowADInplaceOrView guard;
        g = backward_op().call(grad_h, grad_r, saved[0], saved[1], saved[2], saved[3], heads, slots, gamma,
                               memory_init);
      }
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      const auto sz = ctx->saved_data["sizes"].toIntVector();
      const Sizes z{sz[0], sz[1], sz[2], sz[3], sz[4], sz[5]};
      g = backward_cpu(grads[0], grads[1], saved[4], saved[5], z, gamma, saved_from(saved, 6));
    }
    result[0] = std::get<0>(g), result[1] = std::get<1>(g), result[2] = std::get<2>(g), result[3] = std::get<3>(g);
    for (int i = 0; i < 4; ++i) {
      if (!ctx->needs_input_grad(i)) result[i] = Tensor();
    }
    return result;
  }
};

std::tuple<Tensor, Tensor> mann_episode_autograd(const Tensor& x_gates, const Tensor& w_rec, const Tensor& w_head,
                                                 const Tensor& b_head, int64_t heads, int64_t slots, double gamma,
                                                 double memory_init) {
  auto out = MannEpisodeFunction::apply(x_gates, w_rec, w_head, b_head, heads, slots, gamma, memory_init);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(metalearn_ext, CPU, m) {
  m.impl("mann_episode", &mann_episode_cpu);
  m.impl("mann_episode_backward", &mann_episode_backward_cpu);
}

TORCH_LIBRARY_IMPL(metalearn_ext, Autograd, m) { m.impl("mann_episode", &mann_episode_autograd); }
