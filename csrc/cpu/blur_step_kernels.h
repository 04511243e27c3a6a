// BLUR's whole learning step on CPU (specs/blur.md §2; csrc/blur_step.h) for one copy t at a time, as plain
// loops over raw pointers: the forward pass, the label, the backward pass, the Hebbian update with its
// normalization and Oja term, and the gradient of all of it w.r.t. the synapses, the data and every gene.
//
// Why a direct kernel: at BLUR's sizes (per copy 16×64 states, 64×20×k synapses) a step is ~10^5 FLOP, so
// the composed implementation (csrc/blur_step.cpp: ~100 ATen ops and allocations a step) spent nearly all
// of its time in dispatch. Here a step is one pass over each copy with its scratch allocated once per call.
//
// Layouts (per copy): neuron states are channel-major with the batch innermost, (k, n, Bp); synapse-shaped
// things are channel-major with the input neuron innermost, (k, J, Ip) for a layer I → J. Bp and Ip are B
// and I rounded up to kPad<T> (64 bytes); the padding holds zeros, and every operation keeps it zero
// (σ(0) = 0, σ'-scaled zero gradients stay zero, sums over it add zeros), so every inner loop runs over
// whole vectors. In these layouts every contraction of the step is one kernel, rows_product:
//   out[r][0:len] (+)= Σ_s A(r, s) · X[s][0:len]      (A read as scalars through strides, X rows contiguous)
// states from synapses (len = Bp) and synapse gradients from states (len = Ip, X a transposed state); the
// k×k mixes are vector axpys over whole (n, Bp) planes. The user's tensors are read and written through
// their strides (any layout), converting to these layouts on the way in and out.
//
// Everything is always-inlined into the per-ISA entry points of csrc/cpu/blur_step.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/blur_products.h"
#include "cpu/simd.h"

namespace metalearn_ext::cpu::blur_step {

// σ of a layer (csrc/blur_step.h BlurActivation, without the ATen dependency).
enum class Act { kIdentity, kTanh, kReluTanh };

// Rows of states and synapses are padded to a multiple of this many elements: 64 bytes, a multiple of
// every vector width of every ISA build, so one padded layout serves them all.
template <typename T>
constexpr int64_t kPad = 64 / int64_t(sizeof(T));

inline int64_t padded(int64_t n, int64_t pad) { return (n + pad - 1) / pad * pad; }

// A user tensor read through its strides.
template <typename T>
struct Strided {
  const T* p = nullptr;  // nullptr: an undefined gradient (zero)
  int64_t s[4] = {0, 0, 0, 0};
};

// Per-layer gene slots (one block of kGeneSlots(k) values per copy and layer, also for their gradients).
constexpr int kF = 0, kEta = 1, kFHebb = 2, kEtaHebb = 3, kMatrices = 4;  // then nu, mu, nu_hebb, mu_hebb (k×k)
inline int64_t gene_slots(int64_t k) { return kMatrices + 4 * k * k; }

template <typename T>
struct StepArgs {
  int64_t L, B, k;
  const int64_t* n;  // (L + 1) layer sizes
  const Strided<T>* w;  // L synapses (T, n_l, n_{l+1}, k)
  Strided<T> x, code;   // (T, B, n_0), (T, B, n_L)
  const T* genes;       // (T, L, gene_slots(k)): the genes of every copy and layer, read once by the caller
  bool normalize, oja;
  Act hidden, output;
  T eps;
  // forward outputs (contiguous)
  T* const* new_w;  // L, (T, n_l, n_{l+1}, k)
  T* pred;          // (T, B, n_L)
  // backward: upstream gradients (p == nullptr: zero) and outputs (contiguous)
  const Strided<T>* grad_new;  // L
  Strided<T> grad_pred;
  T* const* grad_w;  // L
  T *grad_x, *grad_code;
  T* grad_genes;  // (T, L, gene_slots(k))
  bool skip_grad_x;  // x needs no gradient (grad_x is not written): layer 0's gradients are taken from x alone
};

#if METALEARN_SIMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

using blur::vld;
using blur::vst;

template <typename T, int VL>
using Vec = typename blur::VecOf<T, VL>::v;

// ------------------------------------------------------------------------------------------ activations

template <typename T, int VL>
METALEARN_INLINE Vec<T, VL> activate(Vec<T, VL> z, Act act) {
  using V = Vec<T, VL>;
  if (act == Act::kIdentity) return z;
  V y;
  if constexpr (std::is_same_v<T, float>) {
    y = vtanh(z);  // rational approximation, ~1e-7 relative: float's own accuracy
  } else {
    T lanes[VL];
    vst(lanes, z);
    for (int l = 0; l < VL; ++l) lanes[l] = std::tanh(lanes[l]);  // libm: double needs gradcheck accuracy
    y = vld<V>(lanes);
  }
  if (act == Act::kReluTanh) y = vselect(y < T(0), V{} + T(0), y);  // NaN stays NaN, as torch.relu
  return y;
}

// g·σ'(z) from y = σ(z): tanh' = 1 − y², (relu∘tanh)' = 1 − y² where y > 0, else 0 (torch's subgradient).
template <typename T, int VL>
METALEARN_INLINE Vec<T, VL> activation_grad(Vec<T, VL> g, Vec<T, VL> y, Act act) {
  using V = Vec<T, VL>;
  if (act == Act::kIdentity) return g;
  const V d = g * (T(1) - y * y);
  return act == Act::kTanh ? d : vselect(y > T(0), d, V{} + T(0));
}

// ------------------------------------------------------------------------------ plane-wise primitives

template <typename T, int VL>
METALEARN_INLINE T hsum(Vec<T, VL> v) {
  T lanes[VL];
  vst(lanes, v);
  T s = 0;
  for (int l = 0; l < VL; ++l) s += lanes[l];
  return s;
}

// Σ a·b over len (a multiple of VL) elements.
template <typename T, int VL>
METALEARN_INLINE T dot(const T* a, const T* b, int64_t len) {
  using V = Vec<T, VL>;
  V acc0 = V{} + T(0), acc1 = acc0;
  int64_t i = 0;
  for (; i + 2 * VL <= len; i += 2 * VL) {
    acc0 += vld<V>(a + i) * vld<V>(b + i);
    acc1 += vld<V>(a + i + VL) * vld<V>(b + i + VL);
  }
  for (; i < len; i += VL) acc0 += vld<V>(a + i) * vld<V>(b + i);
  return hsum<T, VL>(acc0 + acc1);
}

// dst[c] (+)= Σ_d E[c][d]·src[d] over K planes, K known: one pass, the K source vectors loaded once.
template <typename T, int VL, int K>
METALEARN_INLINE void mix_planes_k(const T* mix, bool transpose, const T* src, T* dst, int64_t plane, bool accumulate) {
  using V = Vec<T, VL>;
  T e[K * K];
  for (int c = 0; c < K; ++c)
    for (int d = 0; d < K; ++d) e[c * K + d] = transpose ? mix[d * K + c] : mix[c * K + d];
  for (int64_t i = 0; i < plane; i += VL) {
    V x[K];
#pragma GCC unroll 4
    for (int d = 0; d < K; ++d) x[d] = vld<V>(src + d * plane + i);
#pragma GCC unroll 4
    for (int c = 0; c < K; ++c) {
      V acc = accumulate ? vld<V>(dst + c * plane + i) : V{} + T(0);
#pragma GCC unroll 4
      for (int d = 0; d < K; ++d) acc += e[c * K + d] * x[d];
      vst(dst + c * plane + i, acc);
    }
  }
}

// dst[c] (+)= Σ_d E[c][d]·src[d] over k planes of `plane` elements, E = mix (k×k row-major) or, with
// transpose, mixᵀ. dst and src must not overlap.
template <typename T, int VL>
METALEARN_INLINE void mix_planes(const T* mix, bool transpose, const T* src, T* dst, int64_t k, int64_t plane,
                                 bool accumulate) {
  using V = Vec<T, VL>;
  switch (k) {
    case 2: return mix_planes_k<T, VL, 2>(mix, transpose, src, dst, plane, accumulate);
    case 3: return mix_planes_k<T, VL, 3>(mix, transpose, src, dst, plane, accumulate);
    case 4: return mix_planes_k<T, VL, 4>(mix, transpose, src, dst, plane, accumulate);
    default: break;
  }
  for (int64_t c = 0; c < k; ++c) {
    T* o = dst + c * plane;
    if (!accumulate) std::fill_n(o, plane, T(0));
    for (int64_t d = 0; d < k; ++d) {
      const T e = transpose ? mix[d * k + c] : mix[c * k + d];
      const T* x = src + d * plane;
      for (int64_t i = 0; i < plane; i += VL) vst(o + i, vld<V>(o + i) + e * vld<V>(x + i));
    }
  }
}

// grad[c][d] += Σ x[c]·y[d] over K planes, K known: one pass with K² accumulators.
template <typename T, int VL, int K>
METALEARN_INLINE void mix_grad_k(const T* x, const T* y, int64_t plane, T* grad) {
  using V = Vec<T, VL>;
  V acc[K * K];
#pragma GCC unroll 16
  for (int e = 0; e < K * K; ++e) acc[e] = V{} + T(0);
  for (int64_t i = 0; i < plane; i += VL) {
    V xv[K], yv[K];
#pragma GCC unroll 4
    for (int c = 0; c < K; ++c) xv[c] = vld<V>(x + c * plane + i), yv[c] = vld<V>(y + c * plane + i);
#pragma GCC unroll 4
    for (int c = 0; c < K; ++c)
#pragma GCC unroll 4
      for (int d = 0; d < K; ++d) acc[c * K + d] += xv[c] * yv[d];
  }
  for (int e = 0; e < K * K; ++e) grad[e] += hsum<T, VL>(acc[e]);
}

// grad[c][d] += Σ x[c]·y[d] over the planes (the gradient of a mix E[c][d] applied as dst[c] = Σ_d E y[d]
// with upstream x).
template <typename T, int VL>
METALEARN_INLINE void mix_grad(const T* x, const T* y, int64_t k, int64_t plane, T* grad) {
  switch (k) {
    case 2: return mix_grad_k<T, VL, 2>(x, y, plane, grad);
    case 3: return mix_grad_k<T, VL, 3>(x, y, plane, grad);
    case 4: return mix_grad_k<T, VL, 4>(x, y, plane, grad);
    default: break;
  }
  for (int64_t c = 0; c < k; ++c)
    for (int64_t d = 0; d < k; ++d) grad[c * k + d] += dot<T, VL>(x + c * plane, y + d * plane, plane);
}

// ----------------------------------------------------------------------------------------- transposes
//
// Converting between the user's layouts and these is a transpose of small matrices (64×40 synapses, 64×16
// states), which element by element cost more than the step's products. Tiles of VL×VL go through
// registers instead: log2(VL) rounds of two-input shuffles, each swapping one bit of the row index with
// the same bit of the column index.

template <typename T, int VL>
using Lanes = std::make_index_sequence<VL>;

// Rows a (bit H of the row index 0) and b (bit H set) after one round: lanes with bit H set swap across.
template <typename T, int VL, int H, size_t... P>
METALEARN_INLINE void swap_bit(Vec<T, VL>& a, Vec<T, VL>& b, std::index_sequence<P...>) {
  const Vec<T, VL> lo = __builtin_shufflevector(a, b, ((P & H) == 0 ? int(P) : int(VL + P - H))...);
  const Vec<T, VL> hi = __builtin_shufflevector(a, b, ((P & H) == 0 ? int(P + H) : int(VL + P))...);
  a = lo, b = hi;
}

template <typename T, int VL, int H = VL / 2>
METALEARN_INLINE void transpose_tile(Vec<T, VL> (&r)[VL]) {
  if constexpr (H >= 1) {
#pragma GCC unroll 16
    for (int i = 0; i < VL; ++i)
      if ((i & H) == 0) swap_bit<T, VL, H>(r[i], r[i + H], Lanes<T, VL>{});
    transpose_tile<T, VL, H / 2>(r);
  }
}

// Row r of a matrix at base + r·stride, or, with a permutation, at base + perm[r]·stride (the synapse row
// of column n = j·k + c in the channel-major layout (k, J, ·) is c·J + j: Workspace::perm).
template <typename T>
struct RowMap {
  T* base;
  int64_t stride;
  const int64_t* perm = nullptr;
  METALEARN_INLINE T* operator()(int64_t r) const { return base + (perm ? perm[r] : r) * stride; }
};

// dst(c)[r] = src(r)[c] for r < R, c < C: whole VL×VL tiles through registers, the edges element by element.
template <typename T, int VL>
METALEARN_INLINE void transpose(const RowMap<const T>& src, const RowMap<T>& dst, int64_t R, int64_t C) {
  using V = Vec<T, VL>;
  const int64_t Rf = R / VL * VL, Cf = C / VL * VL;
  for (int64_t r0 = 0; r0 < Rf; r0 += VL)
    for (int64_t c0 = 0; c0 < Cf; c0 += VL) {
      V tile[VL];
#pragma GCC unroll 16
      for (int i = 0; i < VL; ++i) tile[i] = vld<V>(src(r0 + i) + c0);
      transpose_tile<T, VL>(tile);
#pragma GCC unroll 16
      for (int i = 0; i < VL; ++i) vst(dst(c0 + i) + r0, tile[i]);
    }
  for (int64_t c = Cf; c < C; ++c) {  // the edges: columns past Cf of every row, then rows past Rf
    T* d = dst(c);
    for (int64_t r = 0; r < R; ++r) d[r] = src(r)[c];
  }
  for (int64_t r = Rf; r < R; ++r) {
    const T* s = src(r);
    for (int64_t c = 0; c < Cf; ++c) dst(c)[r] = s[c];
  }
}

// A user tensor's (rows, cols) slice at p with strides (rs, cs) into dst(c)[r]: tiles when the columns are
// contiguous, else element by element.
template <typename T, int VL>
METALEARN_INLINE void gather_transposed(const T* p, int64_t rs, int64_t cs, int64_t R, int64_t C, const RowMap<T>& dst) {
  if (cs == 1) return transpose<T, VL>(RowMap<const T>{p, rs}, dst, R, C);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) dst(c)[r] = p[r * rs + c * cs];
}

// dst (B, Ip) per channel = src (n, Bp)ᵀ with zeros in columns n..Ip (rows B..Bp of dst are never read).
template <typename T, int VL>
METALEARN_INLINE void transpose_planes(const T* src, int64_t k, int64_t n, int64_t Bp, int64_t B, T* dst, int64_t Ip) {
  for (int64_t c = 0; c < k; ++c) {
    T* d = dst + c * Bp * Ip;
    transpose<T, VL>(RowMap<const T>{src + c * n * Bp, Bp}, RowMap<T>{d, Ip}, n, B);
    for (int64_t b = 0; b < B; ++b) std::fill(d + b * Ip + n, d + (b + 1) * Ip, T(0));
  }
}

// ------------------------------------------------------------------------------------ the one product

// Rows [r0, r0 + RB) × vectors [v0, v0 + NV·VL) of out = Σ_s A(r, s)·X[s] (+ out with accumulate).
template <typename T, int VL, int RB, int NV>
METALEARN_INLINE void product_tile(T* out, bool accumulate, const T* A, int64_t ar, int64_t as, int64_t r0, int64_t S,
                                   const T* X, int64_t len, int64_t v0) {
  using V = Vec<T, VL>;
  V acc[RB][NV];
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[rr][j] = accumulate ? vld<V>(out + (r0 + rr) * len + v0 + j * VL) : V{} + T(0);
  const T* a = A + r0 * ar;
  for (int64_t s = 0; s < S; ++s, a += as) {
    V xv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) xv[j] = vld<V>(X + s * len + v0 + j * VL);
#pragma GCC unroll 8
    for (int rr = 0; rr < RB; ++rr) {
      const T av = a[rr * ar];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[rr][j] += av * xv[j];
    }
  }
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) vst(out + (r0 + rr) * len + v0 + j * VL, acc[rr][j]);
}

template <typename T, int VL, int RB, int NV>
METALEARN_INLINE void product_columns(T* out, bool accumulate, const T* A, int64_t ar, int64_t as, int64_t R,
                                      int64_t S, const T* X, int64_t len, int64_t v0) {
  int64_t r = 0;
  for (; r + RB <= R; r += RB) product_tile<T, VL, RB, NV>(out, accumulate, A, ar, as, r, S, X, len, v0);
  // the rows left in tiles of 4, 2, 1: a lone accumulator is one chain of dependent FMAs, latency-bound
  if constexpr (RB > 4) {
    for (; r + 4 <= R; r += 4) product_tile<T, VL, 4, NV>(out, accumulate, A, ar, as, r, S, X, len, v0);
  }
  for (; r + 2 <= R; r += 2) product_tile<T, VL, 2, NV>(out, accumulate, A, ar, as, r, S, X, len, v0);
  for (; r < R; ++r) product_tile<T, VL, 1, NV>(out, accumulate, A, ar, as, r, S, X, len, v0);
}

// out[r][0:len] (+)= Σ_{s<S} A[r·ar + s·as] · X[s·len + 0:len] for r < R; len a multiple of VL. Register
// tiles of rows × vectors: with one vector of columns (a batch of 16 floats on AVX-512) 8 rows share each
// load of X; with more, 4 rows × 2 vectors share the loads of both operands.
template <typename T, int VL>
METALEARN_INLINE void rows_product(T* out, bool accumulate, const T* A, int64_t ar, int64_t as, int64_t R, int64_t S,
                                   const T* X, int64_t len) {
  int64_t v0 = 0;
  if (len == VL) return product_columns<T, VL, 8, 1>(out, accumulate, A, ar, as, R, S, X, len, 0);
  for (; v0 + 2 * VL <= len; v0 += 2 * VL) product_columns<T, VL, 4, 2>(out, accumulate, A, ar, as, R, S, X, len, v0);
  if (v0 < len) product_columns<T, VL, 4, 1>(out, accumulate, A, ar, as, R, S, X, len, v0);
}

// ------------------------------------------------------------------------------------------ workspace

// One copy's scratch, carved out of one allocation per call (and thread). Sizes: SP(l) = k·n_l·Bp (a layer's
// states), SY(l) = k·n_{l+1}·Ip_l (a layer's synapses).
template <typename T>
struct Workspace {
  std::vector<T*> fwd, post, msg_fwd, msg_bwd, wt;  // states of every layer; wt: the synapses, (k, J, Ip)
  std::vector<T*> g_post, g_fwd, g_wt;              // backward only
  T *mixed, *mixed2, *trans, *syn, *syn2, *colv, *colv2, *colv3, *hs, *gz, *gm;
  std::vector<T> genes;                             // one copy's gene gradients (L, gene_slots)
  std::vector<int64_t> Ip;
  std::vector<std::vector<int64_t>> perm;  // per layer, n = j·k + c → c·J + j: where column n of (J, k) goes
  int64_t Bp;
  std::vector<T> storage;

  // backward: the gradient buffers too. forward_only: only what the forward pass and its gradient use (the
  // blur_forward op: no post, msg_bwd, mixed2, syn*, colv*).
  Workspace(const StepArgs<T>& a, bool backward, bool forward_only = false) {
    const int64_t L = a.L, k = a.k;
    Bp = padded(a.B, kPad<T>);
    Ip.resize(L);
    perm.resize(L);
    int64_t max_state = 0, max_syn = 0, max_trans = 0, max_col = 0;
    for (int64_t l = 0; l < L; ++l) {
      Ip[l] = padded(a.n[l], kPad<T>);
      const int64_t J = a.n[l + 1];
      perm[l].resize(J * k);
      for (int64_t j = 0; j < J; ++j)
        for (int64_t c = 0; c < k; ++c) perm[l][j * k + c] = c * J + j;
      max_syn = std::max(max_syn, k * a.n[l + 1] * Ip[l]);
      max_trans = std::max(max_trans, k * Bp * Ip[l]);
      max_col = std::max(max_col, k * a.n[l + 1]);
    }
    for (int64_t l = 0; l <= L; ++l) max_state = std::max(max_state, k * a.n[l] * Bp);
    auto sp = [&](int64_t l) { return k * a.n[l] * Bp; };
    auto sy = [&](int64_t l) { return k * a.n[l + 1] * Ip[l]; };
    int64_t total = 0;
    std::vector<std::pair<T**, int64_t>> plan;  // (where to put the pointer, how many elements)
    // every buffer starts on a 64-byte boundary: no vector load or store of a padded row splits a cache line
    auto take = [&](T** where, int64_t count) {
      count = padded(count, kPad<T>);
      plan.emplace_back(where, count);
      total += count;
    };
    fwd.assign(L + 1, nullptr), post.assign(L + 1, nullptr), msg_fwd.assign(L, nullptr), msg_bwd.assign(L, nullptr);
    wt.assign(L, nullptr);
    for (int64_t l = 0; l <= L; ++l) take(&fwd[l], sp(l));
    for (int64_t l = 0; l < L; ++l) take(&msg_fwd[l], sp(l + 1));
    for (int64_t l = 0; l < L; ++l) take(&wt[l], sy(l));
    take(&mixed, max_state), take(&trans, max_trans);
    mixed2 = syn = syn2 = colv = colv2 = colv3 = hs = gz = gm = nullptr;
    if (!forward_only) {
      for (int64_t l = 1; l <= L; ++l) take(&post[l], sp(l));
      for (int64_t l = 1; l < L; ++l) take(&msg_bwd[l], sp(l));
      take(&mixed2, max_state), take(&syn, max_syn), take(&syn2, max_syn);
      take(&colv, max_col), take(&colv2, max_col), take(&colv3, max_col), take(&hs, k);
    }
    if (backward && forward_only) take(&syn, max_syn);  // forward_states_backward's scratch
    if (backward) {
      g_post.assign(L + 1, nullptr), g_fwd.assign(L + 1, nullptr), g_wt.assign(L, nullptr);
      for (int64_t l = 0; l <= (forward_only ? 0 : L); ++l) take(&g_post[l], sp(l));
      for (int64_t l = 1; l <= L; ++l) take(&g_fwd[l], sp(l));
      for (int64_t l = 0; l < L; ++l) take(&g_wt[l], sy(l));
      take(&gz, max_state), take(&gm, max_state);
      genes.resize(L * gene_slots(k));
    }
    storage.assign(total + kPad<T>, T(0));  // zeros: the padding of every buffer starts (and stays) zero
    T* p = storage.data();
    p += (kPad<T> - reinterpret_cast<uintptr_t>(p) / sizeof(T) % kPad<T>) % kPad<T>;
    for (auto& [where, count] : plan) *where = p, p += count;
    post[0] = fwd[0];  // the input layer keeps the data
  }
};

// ------------------------------------------------------------------------------------------ one copy

// Copy t of a user's synapse-shaped tensor (T, I, J, k) into the layout (k, J, Ip): a transpose of the
// (I, J·k) matrix when (J, k) are contiguous, element by element otherwise. Columns I..Ip stay zero.
template <typename T, int VL>
METALEARN_INLINE void read_synapses(const Strided<T>& w, int64_t t, int64_t I, int64_t J, int64_t k, T* dst, int64_t Ip,
                                    const int64_t* perm) {
  const T* src = w.p + t * w.s[0];
  if (w.s[3] == 1 && w.s[2] == k) return transpose<T, VL>(RowMap<const T>{src, w.s[1]}, RowMap<T>{dst, Ip, perm}, I, J * k);
  for (int64_t i = 0; i < I; ++i)
    for (int64_t j = 0; j < J; ++j)
      for (int64_t c = 0; c < k; ++c) dst[(c * J + j) * Ip + i] = src[i * w.s[1] + j * w.s[2] + c * w.s[3]];
}

// The inverse, into a contiguous (I, J, k) block.
template <typename T, int VL>
METALEARN_INLINE void write_synapses(const T* src, int64_t Ip, int64_t I, int64_t J, int64_t k, T* out,
                                     const int64_t* perm) {
  transpose<T, VL>(RowMap<const T>{src, Ip, perm}, RowMap<T>{out, J * k}, J * k, I);
}

// The forward pass of copy t into ws: wt, the synapses in (k, J, Ip); fwd, the states after the forward pass
// (fwd[L]'s state 0 is pred); msg_fwd, the messages before the η scaling. Reads the genes eta and nu only.
template <typename T, int VL>
METALEARN_INLINE void forward_states(const StepArgs<T>& a, int64_t t, Workspace<T>& ws) {
  using V = Vec<T, VL>;
  const int64_t L = a.L, B = a.B, k = a.k, Bp = ws.Bp, G = gene_slots(k);
  const T* genes = a.genes + t * L * G;
  for (int64_t l = 0; l < L; ++l) read_synapses<T, VL>(a.w[l], t, a.n[l], a.n[l + 1], k, ws.wt[l], ws.Ip[l], ws.perm[l].data());
  // layer 0: x in state 0, the other states zero (never written)
  gather_transposed<T, VL>(a.x.p + t * a.x.s[0], a.x.s[1], a.x.s[2], B, a.n[0], RowMap<T>{ws.fwd[0], Bp});
  for (int64_t l = 0; l < L; ++l) {
    // the f·a term of spec §2 vanishes here: every step starts from zeroed neuron states
    const T* g = genes + l * G;
    const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
    mix_planes<T, VL>(g + kMatrices, false, ws.fwd[l], ws.mixed, k, I * Bp, false);  // ν
    for (int64_t c = 0; c < k; ++c)
      rows_product<T, VL>(ws.msg_fwd[l] + c * J * Bp, false, ws.wt[l] + c * J * Ip, Ip, 1, J, I, ws.mixed + c * I * Bp, Bp);
    const Act act = l == L - 1 ? a.output : a.hidden;
    const T eta = g[kEta];
    for (int64_t e = 0; e < k * J * Bp; e += VL)
      vst(ws.fwd[l + 1] + e, activate<T, VL>(eta * vld<V>(ws.msg_fwd[l] + e), act));
  }
}

// The neuron states of copy t's step into ws: the forward pass (forward_states), then post (what the Hebbian
// update sees: post[L] with the label, hidden layers after the backward pass) and msg_bwd (the backward
// pass's messages before the η scaling).
template <typename T, int VL>
METALEARN_INLINE void step_states(const StepArgs<T>& a, int64_t t, Workspace<T>& ws) {
  using V = Vec<T, VL>;
  const int64_t L = a.L, B = a.B, k = a.k, Bp = ws.Bp, G = gene_slots(k);
  const T* genes = a.genes + t * L * G;
  forward_states<T, VL>(a, t, ws);
  {  // the label: post[L] = [pred, code, 0, ...]
    const int64_t C = a.n[L];
    T* top = ws.post[L];
    std::memcpy(top, ws.fwd[L], C * Bp * sizeof(T));
    const T* code = a.code.p + t * a.code.s[0];
    for (int64_t j = 0; j < C; ++j)
      for (int64_t b = 0; b < B; ++b) top[(C + j) * Bp + b] = code[b * a.code.s[1] + j * a.code.s[2]];
    std::fill(top + 2 * C * Bp, top + k * C * Bp, T(0));
  }
  for (int64_t l = L - 1; l >= 1; --l) {  // hidden layers only: layer 0 holds the data
    const T* g = genes + l * G;
    const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
    mix_planes<T, VL>(g + kMatrices + k * k, false, ws.post[l + 1], ws.mixed, k, J * Bp, false);  // μ
    for (int64_t c = 0; c < k; ++c)
      rows_product<T, VL>(ws.msg_bwd[l] + c * I * Bp, false, ws.wt[l] + c * J * Ip, 1, Ip, I, J, ws.mixed + c * J * Bp, Bp);
    const T f = g[kF], eta = g[kEta];
    for (int64_t e = 0; e < k * I * Bp; e += VL)
      vst(ws.post[l] + e, activate<T, VL>(f * vld<V>(ws.fwd[l] + e) + eta * vld<V>(ws.msg_bwd[l] + e), a.hidden));
  }
}

// The Hebbian update of layer l before its epilogue, hebb[c] = hs[c]·H[c]: q = μ̃·post[l+1] (k, J, Bp) in
// ws.mixed2, H (k, J, Ip) in ws.syn, hs (k) in ws.hs, and per (c, j) alpha = f̃ − η̃·Σ_b q² (oja) or f̃ in
// ws.colv, Σ_b q² in ws.colv2. A hidden layer: p = ν̃ᵀ·post[l] (k, I, Bp) in ws.mixed, H[c] = q[c]·p[c]ᵀ, hs = 1.
// Layer 0 holds x in state 0 and zeros, so p[c] = ν̃[0][c]·x: H[c] = q[c]·xᵀ and hs[c] = ν̃[0][c], one plane
// transposed instead of k, and the gradients of ν̃ and q need no p (backward_copy).
template <typename T, int VL>
METALEARN_INLINE void hebbian_terms(const StepArgs<T>& a, int64_t t, int64_t l, Workspace<T>& ws) {
  const int64_t k = a.k, B = a.B, Bp = ws.Bp, I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
  const T* g = a.genes + (t * a.L + l) * gene_slots(k);
  const T* nuh = g + kMatrices + 2 * k * k;
  mix_planes<T, VL>(g + kMatrices + 3 * k * k, false, ws.post[l + 1], ws.mixed2, k, J * Bp, false);  // q[c] = Σ_d μ̃[c][d] post[d]
  if (l == 0) {
    transpose_planes<T, VL>(ws.post[0], 1, I, Bp, B, ws.trans, Ip);
    for (int64_t c = 0; c < k; ++c) {
      rows_product<T, VL>(ws.syn + c * J * Ip, false, ws.mixed2 + c * J * Bp, Bp, 1, J, B, ws.trans, Ip);
      ws.hs[c] = nuh[c];  // ν̃[0][c]
    }
  } else {
    mix_planes<T, VL>(nuh, true, ws.post[l], ws.mixed, k, I * Bp, false);  // p[c] = Σ_e ν̃[e][c] pre[e]
    transpose_planes<T, VL>(ws.mixed, k, I, Bp, B, ws.trans, Ip);
    for (int64_t c = 0; c < k; ++c) {
      rows_product<T, VL>(ws.syn + c * J * Ip, false, ws.mixed2 + c * J * Bp, Bp, 1, J, B, ws.trans + c * Bp * Ip, Ip);
      ws.hs[c] = T(1);
    }
  }
  const T fh = g[kFHebb], etah = g[kEtaHebb];
  for (int64_t cj = 0; cj < k * J; ++cj) {
    const T* q = ws.mixed2 + cj * Bp;
    ws.colv2[cj] = a.oja ? dot<T, VL>(q, q, Bp) : T(0);
    ws.colv[cj] = fh - etah * ws.colv2[cj];
  }
}

// Copy t's new synapses into a.new_w and pred into a.pred.
template <typename T, int VL>
METALEARN_INLINE void forward_copy(const StepArgs<T>& a, int64_t t, Workspace<T>& ws) {
  using V = Vec<T, VL>;
  const int64_t L = a.L, B = a.B, k = a.k, Bp = ws.Bp, C = a.n[L];
  step_states<T, VL>(a, t, ws);
  T* pred = a.pred + t * B * C;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < C; ++j) pred[b * C + j] = ws.fwd[L][j * Bp + b];
  for (int64_t l = 0; l < L; ++l) {
    const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
    hebbian_terms<T, VL>(a, t, l, ws);
    const T etah = a.genes[(t * L + l) * gene_slots(k) + kEtaHebb];
    for (int64_t cj = 0; cj < k * J; ++cj) {  // u = alpha·w + η̃·hebb, then / ‖u‖ over the inputs
      T* u = ws.syn + cj * Ip;
      const T* w = ws.wt[l] + cj * Ip;
      const T alpha = ws.colv[cj], eh = etah * ws.hs[cj / J];
      for (int64_t i = 0; i < Ip; i += VL) vst(u + i, alpha * vld<V>(w + i) + eh * vld<V>(u + i));
      if (a.normalize) {
        const T r = T(1) / std::sqrt(dot<T, VL>(u, u, Ip) + a.eps);
        for (int64_t i = 0; i < Ip; i += VL) vst(u + i, vld<V>(u + i) * r);
      }
    }
    write_synapses<T, VL>(ws.syn, Ip, I, J, k, a.new_w[l] + t * I * J * k, ws.perm[l].data());
  }
}

// The gradient of the forward pass (forward_states) of copy t, in reverse, from g_fwd[L] (the gradient of the
// output's states): fwd[l + 1] = σ(η·msg), msg[c][j] = Σ_i w[c][j][i]·m[c][i], m = ν·fwd[l]. Adds (accumulate)
// or writes the gradients of the states of layers L−1 … 1 into g_fwd, of layer 0 into g_post[0], of the
// synapses into g_wt, and adds those of η and ν into ws.genes.
template <typename T, int VL>
METALEARN_INLINE void forward_states_backward(const StepArgs<T>& a, int64_t t, Workspace<T>& ws, bool accumulate) {
  using V = Vec<T, VL>;
  const int64_t L = a.L, B = a.B, k = a.k, Bp = ws.Bp, G = gene_slots(k);
  for (int64_t l = L - 1; l >= 0; --l) {
    const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
    const T* g = a.genes + (t * L + l) * G;
    T* gg = ws.genes.data() + l * G;
    const T eta = g[kEta];
    const Act act = l == L - 1 ? a.output : a.hidden;
    V acc_eta = V{} + T(0);
    for (int64_t e = 0; e < k * J * Bp; e += VL) {
      const V gz = activation_grad<T, VL>(vld<V>(ws.g_fwd[l + 1] + e), vld<V>(ws.fwd[l + 1] + e), act);
      acc_eta += gz * vld<V>(ws.msg_fwd[l] + e);
      vst(ws.gz + e, eta * gz);  // the gradient of msg
    }
    gg[kEta] += hsum<T, VL>(acc_eta);
    const T* nu = g + kMatrices;
    if (l == 0 && a.skip_grad_x) {
      // Layer 0 holds x in state 0 and zeros: m[c] = ν[c][0]·x, so with P[c][j][i] = Σ_b grad_msg[c][j][b]·x[i][b]
      // grad_w[c] = ν[c][0]·P[c] and grad ν[c][0] = Σ_{j,i} w[c][j][i]·P[c][j][i] (grad ν[c][d > 0] = 0):
      // without the gradient of the states, which only x's gradient needs.
      transpose_planes<T, VL>(ws.fwd[0], 1, I, Bp, B, ws.trans, Ip);
      for (int64_t c = 0; c < k; ++c) {
        T* P = ws.syn;
        T* gw = ws.g_wt[0] + c * J * Ip;
        rows_product<T, VL>(P, false, ws.gz + c * J * Bp, Bp, 1, J, B, ws.trans, Ip);
        gg[kMatrices + c * k] += dot<T, VL>(ws.wt[0] + c * J * Ip, P, J * Ip);
        const T s = nu[c * k];
        for (int64_t e = 0; e < J * Ip; e += VL)
          vst(gw + e, (accumulate ? vld<V>(gw + e) : V{} + T(0)) + s * vld<V>(P + e));
      }
      continue;
    }
    mix_planes<T, VL>(nu, false, ws.fwd[l], ws.mixed, k, I * Bp, false);  // m
    transpose_planes<T, VL>(ws.mixed, k, I, Bp, B, ws.trans, Ip);
    for (int64_t c = 0; c < k; ++c) {
      // grad_m[c][i] = Σ_j w[c][j][i]·grad_msg[c][j]; grad_w[c][j][i] += Σ_b grad_msg[c][j][b]·m[c][i][b]
      rows_product<T, VL>(ws.gm + c * I * Bp, false, ws.wt[l] + c * J * Ip, 1, Ip, I, J, ws.gz + c * J * Bp, Bp);
      rows_product<T, VL>(ws.g_wt[l] + c * J * Ip, accumulate, ws.gz + c * J * Bp, Bp, 1, J, B, ws.trans + c * Bp * Ip, Ip);
    }
    mix_planes<T, VL>(nu, true, ws.gm, l > 0 ? ws.g_fwd[l] : ws.g_post[0], k, I * Bp, accumulate);
    mix_grad<T, VL>(ws.gm, ws.fwd[l], k, I * Bp, gg + kMatrices);
  }
}

// Copy t's gradients into a.grad_w, a.grad_x, a.grad_code and a.grad_genes.
template <typename T, int VL>
METALEARN_INLINE void backward_copy(const StepArgs<T>& a, int64_t t, Workspace<T>& ws) {
  using V = Vec<T, VL>;
  const int64_t L = a.L, B = a.B, k = a.k, kk = k * k, Bp = ws.Bp, G = gene_slots(k), C = a.n[L];
  step_states<T, VL>(a, t, ws);
  for (int64_t l = a.skip_grad_x ? 1 : 0; l <= L; ++l) std::fill_n(ws.g_post[l], k * a.n[l] * Bp, T(0));
  for (int64_t l = 1; l <= L; ++l) std::fill_n(ws.g_fwd[l], k * a.n[l] * Bp, T(0));
  for (int64_t l = 0; l < L; ++l) std::fill_n(ws.g_wt[l], k * a.n[l + 1] * ws.Ip[l], T(0));
  std::fill(ws.genes.begin(), ws.genes.end(), T(0));

  // The Hebbian updates: new[l] from w[l], post[l] (pre-synaptic) and post[l + 1] (post-synaptic).
  for (int64_t l = 0; l < L; ++l) {
    const Strided<T>& gn = a.grad_new[l];
    if (gn.p == nullptr) continue;
    const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
    const T* g = a.genes + (t * L + l) * G;
    T* gg = ws.genes.data() + l * G;
    const T etah = g[kEtaHebb];
    hebbian_terms<T, VL>(a, t, l, ws);  // q: mixed2, H: syn, hs, alpha: colv, Σ_b q²: colv2 (hidden: p: mixed)
    read_synapses<T, VL>(gn, t, I, J, k, ws.syn2, Ip, ws.perm[l].data());  // the upstream gradient, (k, J, Ip)
    T g_decay = 0, g_lr = 0;
    for (int64_t cj = 0; cj < k * J; ++cj) {
      const T* w = ws.wt[l] + cj * Ip;
      const T* H = ws.syn + cj * Ip;
      T* gu = ws.syn2 + cj * Ip;
      const T alpha = ws.colv[cj], hs = ws.hs[cj / J], eh = etah * hs;
      if (a.normalize) {  // out = u·r, r = (Σ_i u² + eps)^(-1/2): grad_u = r·(grad − out·Σ_i grad·out)
        T uu = 0, gdu = 0;
        {
          V acc_uu = V{} + T(0), acc_gu = acc_uu;
          for (int64_t i = 0; i < Ip; i += VL) {
            const V u = alpha * vld<V>(w + i) + eh * vld<V>(H + i);
            acc_uu += u * u;
            acc_gu += vld<V>(gu + i) * u;
          }
          uu = hsum<T, VL>(acc_uu), gdu = hsum<T, VL>(acc_gu);
        }
        const T r = T(1) / std::sqrt(uu + a.eps), dotg = gdu * r;  // dotg = Σ_i grad·out
        for (int64_t i = 0; i < Ip; i += VL) {
          const V out = (alpha * vld<V>(w + i) + eh * vld<V>(H + i)) * r;
          vst(gu + i, r * (vld<V>(gu + i) - out * dotg));
        }
      }
      T* gw = ws.g_wt[l] + cj * Ip;
      V acc_w = V{} + T(0), acc_h = acc_w;
      for (int64_t i = 0; i < Ip; i += VL) {
        const V gv = vld<V>(gu + i);
        vst(gw + i, vld<V>(gw + i) + alpha * gv);
        acc_w += gv * vld<V>(w + i);
        acc_h += gv * vld<V>(H + i);
        vst(gu + i, eh * gv);  // from here on syn2 holds the gradient of H, hs·η̃·grad_u
      }
      const T g_alpha = hsum<T, VL>(acc_w), g_h = hsum<T, VL>(acc_h);  // Σ_i grad_u·w, Σ_i grad_u·H
      g_decay += g_alpha;
      g_lr += hs * g_h - (a.oja ? g_alpha * ws.colv2[cj] : T(0));
      ws.colv3[cj] = g_alpha;
      if (l == 0) gg[kMatrices + 2 * kk + cj / J] += etah * g_h;  // grad ν̃[0][c] = Σ grad_hebb·H (ν̃[e > 0]: 0)
    }
    gg[kFHebb] += g_decay;
    gg[kEtaHebb] += g_lr;
    // grad_q[c][j] = Σ_i grad_H[c][j][i]·P[c][i] (− 2η̃·q·Σ_i grad_u·w with Oja), P = p on a hidden layer, x on
    // layer 0 (p = hs·P)
    for (int64_t c = 0; c < k; ++c) {
      const T* pc = l == 0 ? ws.post[0] : ws.mixed + c * I * Bp;
      rows_product<T, VL>(ws.gm + c * J * Bp, false, ws.syn2 + c * J * Ip, Ip, 1, J, I, pc, Bp);
    }
    if (a.oja) {
      for (int64_t cj = 0; cj < k * J; ++cj) {
        const T s = -2 * etah * ws.colv3[cj];
        T* gq = ws.gm + cj * Bp;
        const T* q = ws.mixed2 + cj * Bp;
        for (int64_t b = 0; b < Bp; b += VL) vst(gq + b, vld<V>(gq + b) + s * vld<V>(q + b));
      }
    }
    if (l == 0) {
      // only x (state 0) has a gradient to take: grad_x += Σ_c ν̃[0][c]·grad_p[c] = Σ_{c,j} grad_H[c][j]·q[c][j],
      // one product over the k·J rows
      if (!a.skip_grad_x)
        rows_product<T, VL>(ws.g_post[0], true, ws.syn2, 1, Ip, I, k * J, ws.mixed2, Bp);
    } else {
      // grad_p[c][i] = Σ_j grad_H[c][j][i]·q[c][j]
      for (int64_t c = 0; c < k; ++c)
        rows_product<T, VL>(ws.gz + c * I * Bp, false, ws.syn2 + c * J * Ip, 1, Ip, I, J, ws.mixed2 + c * J * Bp, Bp);
      const T* nuh = g + kMatrices + 2 * kk;
      mix_planes<T, VL>(nuh, false, ws.gz, ws.g_post[l], k, I * Bp, true);            // grad_pre[e] += Σ_c ν̃[e][c] grad_p[c]
      mix_grad<T, VL>(ws.post[l], ws.gz, k, I * Bp, gg + kMatrices + 2 * kk);  // grad ν̃[e][c] += Σ pre[e]·grad_p[c]
    }
    const T* muh = g + kMatrices + 3 * kk;
    mix_planes<T, VL>(muh, true, ws.gm, ws.g_post[l + 1], k, J * Bp, true);          // grad_post[d] += Σ_c μ̃[c][d] grad_q[c]
    mix_grad<T, VL>(ws.gm, ws.post[l + 1], k, J * Bp, gg + kMatrices + 3 * kk);  // grad μ̃[c][d] += Σ grad_q[c]·post[d]
  }

  // The backward pass ran l = L-1 .. 1, so its gradient runs l = 1 .. L-1: post[l] = σ(f·fwd[l] + η·msg),
  // msg[c][i] = Σ_j w[c][j][i]·mm[c][j], mm = μ·post[l + 1].
  for (int64_t l = 1; l < L; ++l) {
    const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
    const T* g = a.genes + (t * L + l) * G;
    T* gg = ws.genes.data() + l * G;
    const T f = g[kF], eta = g[kEta];
    V acc_f = V{} + T(0), acc_eta = acc_f;
    for (int64_t e = 0; e < k * I * Bp; e += VL) {
      const V gz = activation_grad<T, VL>(vld<V>(ws.g_post[l] + e), vld<V>(ws.post[l] + e), a.hidden);
      acc_f += gz * vld<V>(ws.fwd[l] + e);
      acc_eta += gz * vld<V>(ws.msg_bwd[l] + e);
      vst(ws.g_fwd[l] + e, vld<V>(ws.g_fwd[l] + e) + f * gz);
      vst(ws.gz + e, eta * gz);  // the gradient of msg
    }
    gg[kF] += hsum<T, VL>(acc_f);
    gg[kEta] += hsum<T, VL>(acc_eta);
    const T* mu = g + kMatrices + kk;
    mix_planes<T, VL>(mu, false, ws.post[l + 1], ws.mixed, k, J * Bp, false);  // mm
    transpose_planes<T, VL>(ws.gz, k, I, Bp, B, ws.trans, Ip);
    for (int64_t c = 0; c < k; ++c) {
      // grad_mm[c][j] = Σ_i w[c][j][i]·grad_msg[c][i]; grad_w[c][j][i] += Σ_b mm[c][j][b]·grad_msg[c][i][b]
      rows_product<T, VL>(ws.gm + c * J * Bp, false, ws.wt[l] + c * J * Ip, Ip, 1, J, I, ws.gz + c * I * Bp, Bp);
      rows_product<T, VL>(ws.g_wt[l] + c * J * Ip, true, ws.mixed + c * J * Bp, Bp, 1, J, B, ws.trans + c * Bp * Ip, Ip);
    }
    mix_planes<T, VL>(mu, true, ws.gm, ws.g_post[l + 1], k, J * Bp, true);
    mix_grad<T, VL>(ws.gm, ws.post[l + 1], k, J * Bp, gg + kMatrices + kk);
  }

  {  // The label: post[L] = [pred, code, 0, ...], pred = fwd[L][0].
    T* gcode = a.grad_code + t * B * C;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < C; ++j) gcode[b * C + j] = ws.g_post[L][(C + j) * Bp + b];
    T* gtop = ws.g_fwd[L];
    std::memcpy(gtop, ws.g_post[L], C * Bp * sizeof(T));
    const Strided<T>& gp = a.grad_pred;
    if (gp.p != nullptr) {
      const T* src = gp.p + t * gp.s[0];
      for (int64_t j = 0; j < C; ++j)
        for (int64_t b = 0; b < B; ++b) gtop[j * Bp + b] += src[b * gp.s[1] + j * gp.s[2]];
    }
  }

  forward_states_backward<T, VL>(a, t, ws, true);

  {  // outputs: x was state 0 of layer 0; the synapse gradients back to (I, J, k)
    const int64_t D = a.n[0];
    if (!a.skip_grad_x) transpose<T, VL>(RowMap<const T>{ws.g_post[0], Bp}, RowMap<T>{a.grad_x + t * B * D, D}, D, B);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
      write_synapses<T, VL>(ws.g_wt[l], Ip, I, J, k, a.grad_w[l] + t * I * J * k, ws.perm[l].data());
    }
    std::copy(ws.genes.begin(), ws.genes.end(), a.grad_genes + t * L * G);
  }
}

// The forward pass alone (the blur_forward op, nn.BLUR.predict): copy t's pred into a.pred.
template <typename T, int VL>
METALEARN_INLINE void predict_copy(const StepArgs<T>& a, int64_t t, Workspace<T>& ws) {
  const int64_t L = a.L, B = a.B, Bp = ws.Bp, C = a.n[L];
  forward_states<T, VL>(a, t, ws);
  T* pred = a.pred + t * B * C;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < C; ++j) pred[b * C + j] = ws.fwd[L][j * Bp + b];
}

// Its gradient from a.grad_pred: copy t's gradients into a.grad_w, a.grad_x and a.grad_genes (eta, nu).
template <typename T, int VL>
METALEARN_INLINE void predict_backward_copy(const StepArgs<T>& a, int64_t t, Workspace<T>& ws) {
  const int64_t L = a.L, B = a.B, k = a.k, Bp = ws.Bp, G = gene_slots(k), C = a.n[L], D = a.n[0];
  forward_states<T, VL>(a, t, ws);
  std::fill(ws.genes.begin(), ws.genes.end(), T(0));
  {  // only state 0 of the output has a gradient: the other states' rows, and every padding, stay zero
    T* gtop = ws.g_fwd[L];
    const Strided<T>& gp = a.grad_pred;
    const T* src = gp.p + t * gp.s[0];
    for (int64_t j = 0; j < C; ++j)
      for (int64_t b = 0; b < B; ++b) gtop[j * Bp + b] = src[b * gp.s[1] + j * gp.s[2]];
  }
  forward_states_backward<T, VL>(a, t, ws, false);
  if (!a.skip_grad_x) transpose<T, VL>(RowMap<const T>{ws.g_post[0], Bp}, RowMap<T>{a.grad_x + t * B * D, D}, D, B);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t I = a.n[l], J = a.n[l + 1], Ip = ws.Ip[l];
    write_synapses<T, VL>(ws.g_wt[l], Ip, I, J, k, a.grad_w[l] + t * I * J * k, ws.perm[l].data());
  }
  std::copy(ws.genes.begin(), ws.genes.end(), a.grad_genes + t * L * G);
}

// What run_copies computes per copy: blur_step's forward or backward, blur_forward's forward or backward.
enum class Mode { kStep, kStepBackward, kPredict, kPredictBackward };

inline bool is_backward(Mode m) { return m == Mode::kStepBackward || m == Mode::kPredictBackward; }

// Copies [t0, t1) with one workspace.
template <typename T, int VL>
METALEARN_INLINE void run_copies(const StepArgs<T>& a, int64_t t0, int64_t t1, Mode mode) {
  Workspace<T> ws(a, is_backward(mode), mode == Mode::kPredict || mode == Mode::kPredictBackward);
  for (int64_t t = t0; t < t1; ++t) {
    switch (mode) {
      case Mode::kStep: forward_copy<T, VL>(a, t, ws); break;
      case Mode::kStepBackward: backward_copy<T, VL>(a, t, ws); break;
      case Mode::kPredict: predict_copy<T, VL>(a, t, ws); break;
      case Mode::kPredictBackward: predict_backward_copy<T, VL>(a, t, ws); break;
    }
  }
}

#pragma GCC diagnostic pop
#endif  // METALEARN_SIMD

}  // namespace metalearn_ext::cpu::blur_step
