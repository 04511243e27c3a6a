// Device code of content_read and mann_memory_step (specs/memory_np.md §1), included by
// csrc/cuda/content_read.cu and csrc/cuda/mann_memory_step.cu.
//
// One block of kMemThreads threads per batch element b; phases separated by __syncthreads. The inverse
// norms live in shared memory (S + H floats, plus S for the backward's per-slot sums); per-(h, s)
// intermediates (cosines, weights, their gradients) live in global buffers the host allocates, written
// and read back by the same block (__syncthreads makes a block's global writes visible to the block).
// Reductions over S (softmax max and sum, the backward's dot products) are block reductions in shared
// memory. Everything is float32; the slot choice of mann_memory_step uses the stable sort's tie rule.
#pragma once

#include <cstdint>

namespace metalearn_ext {

constexpr int kMemThreads = 256;

// Sum (or max) of v over the block; red has kMemThreads floats. Every thread gets the result.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* red) {
  const int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int stride = kMemThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) red[t] = kMax ? fmaxf(red[t], red[t + stride]) : red[t] + red[t + stride];
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();
  return r;
}

// minv (S) and kinv (H) in shared memory: 1 / sqrt(|row|² + eps) of memory rows and keys.
__device__ __forceinline__ void inverse_norms(const float* M, const float* K, int H, int S, int W, float eps,
                                              float* minv, float* kinv) {
  for (int s = threadIdx.x; s < S; s += kMemThreads) {
    float acc = 0.f;
    for (int j = 0; j < W; ++j) acc += M[s * W + j] * M[s * W + j];
    minv[s] = 1.f / sqrtf(acc + eps);
  }
  for (int h = threadIdx.x; h < H; h += kMemThreads) {
    float acc = 0.f;
    for (int j = 0; j < W; ++j) acc += K[h * W + j] * K[h * W + j];
    kinv[h] = 1.f / sqrtf(acc + eps);
  }
  __syncthreads();
}

// One batch element's forward: M (S,W), K (H,W), beta (H) or nullptr. Writes cos (H,S) when not nullptr,
// weights (H,S) and reads (H,W). minv, kinv: shared (S), (H); red: shared (kMemThreads).
__device__ __forceinline__ void content_read_block(const float* M, const float* K, const float* beta, int H, int S,
                                                   int W, float eps, float* cos, float* weights, float* reads,
                                                   float* minv, float* kinv, float* red) {
  inverse_norms(M, K, H, S, W, eps, minv, kinv);
  for (int i = threadIdx.x; i < H * S; i += kMemThreads) {
    const int h = i / S, s = i % S;
    float dot = 0.f;
    for (int j = 0; j < W; ++j) dot += K[h * W + j] * M[s * W + j];
    const float c = dot * kinv[h] * minv[s];
    if (cos) cos[i] = c;
    weights[i] = (beta ? beta[h] : 1.f) * c;
  }
  __syncthreads();
  for (int h = 0; h < H; ++h) {
    float* z = weights + h * S;
    float m = -INFINITY;
    for (int s = threadIdx.x; s < S; s += kMemThreads) m = fmaxf(m, z[s]);
    m = block_reduce<true>(m, red);
    float sum = 0.f;
    for (int s = threadIdx.x; s < S; s += kMemThreads) sum += (z[s] = expf(z[s] - m));
    sum = block_reduce<false>(sum, red);
    const float inv = 1.f / sum;
    for (int s = threadIdx.x; s < S; s += kMemThreads) z[s] *= inv;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < H * W; i += kMemThreads) {
    const int h = i / W, j = i % W;
    float acc = 0.f;
    for (int s = 0; s < S; ++s) acc += weights[h * S + s] * M[s * W + j];
    reads[i] = acc;
  }
  __syncthreads();
}

// One batch element's backward for upstream gW (H,S), gR (H,W): gM (S,W) += dL/dM (= when !kAccumulate),
// gK (H,W) = dL/dK, gbeta (H) = dL/dbeta when beta is given. w, cos, g: global scratch (H,S) each;
// minv, self: shared (S); kinv, ksum: shared (H); red: shared (kMemThreads).
template <bool kAccumulate>
__device__ __forceinline__ void content_read_backward_block(const float* M, const float* K, const float* beta,
                                                            const float* gW, const float* gR, int H, int S, int W,
                                                            float eps, float* gM, float* gK, float* gbeta, float* w,
                                                            float* cos, float* g, float* minv, float* kinv,
                                                            float* ksum, float* self, float* red) {
  content_read_block(M, K, beta, H, S, W, eps, cos, w, gK, minv, kinv, red);  // gK: the reads, overwritten below
  for (int i = threadIdx.x; i < H * S; i += kMemThreads) {
    const int h = i / S, s = i % S;
    float acc = gW[i];
    for (int j = 0; j < W; ++j) acc += gR[h * W + j] * M[s * W + j];  // reads = w·M
    g[i] = acc;
  }
  for (int s = threadIdx.x; s < S; s += kMemThreads) self[s] = 0.f;
  __syncthreads();
  for (int h = 0; h < H; ++h) {  // softmax, then z = beta·cos; g becomes kinv·minv·dL/dcos
    const float scale = beta ? beta[h] : 1.f;
    float dot = 0.f;
    for (int s = threadIdx.x; s < S; s += kMemThreads) dot += w[h * S + s] * g[h * S + s];
    dot = block_reduce<false>(dot, red);
    float gb = 0.f, ks = 0.f;
    for (int s = threadIdx.x; s < S; s += kMemThreads) {
      const float dz = w[h * S + s] * (g[h * S + s] - dot);
      const float gc = dz * scale, c = cos[h * S + s];
      gb += dz * c;
      ks += gc * c;
      self[s] += gc * c;  // each thread owns its slots: no race
      g[h * S + s] = gc * kinv[h] * minv[s];
    }
    gb = block_reduce<false>(gb, red);
    ks = block_reduce<false>(ks, red);
    if (threadIdx.x == 0) {
      if (gbeta) gbeta[h] = gb;
      ksum[h] = ks;  // Σ_s dL/dcos·cos: the keys' self term
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < H * W; i += kMemThreads) {
    const int h = i / W, j = i % W;
    float acc = 0.f;
    for (int s = 0; s < S; ++s) acc += g[h * S + s] * M[s * W + j];
    gK[i] = acc - ksum[h] * kinv[h] * kinv[h] * K[i];
  }
  for (int i = threadIdx.x; i < S * W; i += kMemThreads) {
    const int s = i / W, j = i % W;
    float acc = -self[s] * minv[s] * minv[s] * M[i];
    for (int h = 0; h < H; ++h) acc += w[h * S + s] * gR[h * W + j] + g[h * S + s] * K[h * W + j];
    gM[i] = kAccumulate ? gM[i] + acc : acc;
  }
  __syncthreads();
}

// slots (H, shared): the H least-used entries of u (S), smallest first, ties to the lower index.
// taken: shared (S) ints; rv, ri: shared (kMemThreads) scratch.
__device__ __forceinline__ void least_used_block(const float* u, int H, int S, int* slots, int* taken, float* rv,
                                                 int* ri) {
  for (int s = threadIdx.x; s < S; s += kMemThreads) taken[s] = 0;
  __syncthreads();
  for (int h = 0; h < H; ++h) {
    float best = INFINITY;
    int idx = S;
    for (int s = threadIdx.x; s < S; s += kMemThreads)
      if (!taken[s] && (idx == S || u[s] < best)) best = u[s], idx = s;  // s increases: ties keep the lower
    rv[threadIdx.x] = best;
    ri[threadIdx.x] = idx;
    __syncthreads();
    for (int stride = kMemThreads / 2; stride > 0; stride /= 2) {
      const int t = threadIdx.x;
      if (t < stride) {
        const float v2 = rv[t + stride];
        const int i2 = ri[t + stride];
        if (i2 < S && (ri[t] == S || v2 < rv[t] || (v2 == rv[t] && i2 < ri[t]))) rv[t] = v2, ri[t] = i2;
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      slots[h] = ri[0];
      taken[ri[0]] = 1;
    }
    __syncthreads();
  }
}

// ww (H,S) = alpha·rw + (1−alpha)·one_hot(slots); Mn (S,W) = M with row slots[0] zeroed + wwᵀ·add.
struct SharedLayout {
  float *minv, *self, *kinv, *ksum, *red;
  int *taken, *slots, *ri;
};

__device__ __forceinline__ SharedLayout shared_layout(float* smem, int H, int S) {
  SharedLayout l;
  l.minv = smem;
  l.self = l.minv + S;
  l.kinv = l.self + S;
  l.ksum = l.kinv + H;
  l.red = l.ksum + H;
  l.taken = reinterpret_cast<int*>(l.red + kMemThreads);
  l.slots = l.taken + S;
  l.ri = l.slots + H;
  return l;
}

// Bytes of shared memory a kernel needs (host and device).
inline int64_t memory_smem_bytes(int64_t H, int64_t S, bool with_slots) {
  return 4 * (2 * S + 2 * H + kMemThreads + (with_slots ? S + H + kMemThreads : 0));
}

__device__ __forceinline__ void write_block(const float* M, const float* rw, const float* add, const float* alpha,
                                            const int* slots, int H, int S, int W, float* ww, float* Mn) {
  for (int i = threadIdx.x; i < H * S; i += kMemThreads) {
    const int h = i / S, s = i % S;
    ww[i] = alpha[h] * rw[i] + (s == slots[h] ? 1.f - alpha[h] : 0.f);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < S * W; i += kMemThreads) {
    const int s = i / W, j = i % W;
    float acc = s == slots[0] ? 0.f : M[i];
    for (int h = 0; h < H; ++h) acc += ww[h * S + s] * add[h * W + j];
    Mn[i] = acc;
  }
  __syncthreads();
}

// Kernels have internal linkage: both csrc/cuda/*.cu files include this header, each launching its own.
namespace {

// ---------------------------------------------------------------------------------------------------
// Kernels. Shared memory, one layout for all: floats minv (S), self (S), kinv (H), ksum (H), red
// (kMemThreads); then ints taken (S), slots (H), ri (kMemThreads) for mann_memory_step.
// ---------------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(kMemThreads)
    content_read_forward_kernel(const float* __restrict__ memory, const float* __restrict__ keys,
                                const float* __restrict__ beta, float* __restrict__ weights,
                                float* __restrict__ reads, int H, int S, int W, float eps) {
  MANN_DYNAMIC_SHARED(smem);
  const SharedLayout l = shared_layout(smem, H, S);
  const int64_t b = blockIdx.x;
  content_read_block(memory + b * S * W, keys + b * H * W, beta ? beta + b * H : nullptr, H, S, W, eps, nullptr,
                     weights + b * H * S, reads + b * H * W, l.minv, l.kinv, l.red);
}

// scratch: (3, B, H, S) floats.
__global__ void __launch_bounds__(kMemThreads)
    content_read_backward_kernel(const float* __restrict__ grad_weights, const float* __restrict__ grad_reads,
                                 const float* __restrict__ memory, const float* __restrict__ keys,
                                 const float* __restrict__ beta, float* __restrict__ grad_memory,
                                 float* __restrict__ grad_keys, float* __restrict__ grad_beta, float* scratch, int B,
                                 int H, int S, int W, float eps) {
  MANN_DYNAMIC_SHARED(smem);
  const SharedLayout l = shared_layout(smem, H, S);
  const int64_t b = blockIdx.x, hs = int64_t(H) * S;
  float* w = scratch + b * hs;
  content_read_backward_block<false>(memory + b * S * W, keys + b * H * W, beta ? beta + b * H : nullptr,
                                     grad_weights + b * hs, grad_reads + b * H * W, H, S, W, eps,
                                     grad_memory + b * S * W, grad_keys + b * H * W,
                                     grad_beta ? grad_beta + b * H : nullptr, w, w + B * hs, w + 2 * B * hs, l.minv,
                                     l.kinv, l.ksum, l.self, l.red);
}

__global__ void __launch_bounds__(kMemThreads)
    mann_step_forward_kernel(const float* __restrict__ memory, const float* __restrict__ usage,
                             const float* __restrict__ read_weights, const float* __restrict__ keys,
                             const float* __restrict__ add, const float* __restrict__ alpha, float gamma,
                             float* __restrict__ memory_out, float* __restrict__ read_weights_out,
                             float* __restrict__ reads, float* __restrict__ usage_out,
                             float* __restrict__ write_weights, int H, int S, int W, float eps) {
  MANN_DYNAMIC_SHARED(smem);
  const SharedLayout l = shared_layout(smem, H, S);
  const int64_t b = blockIdx.x, hs = int64_t(H) * S;
  const float* u = usage + b * S;
  least_used_block(u, H, S, l.slots, l.taken, l.red, l.ri);
  float* ww = write_weights + b * hs;
  float* Mn = memory_out + b * S * W;
  write_block(memory + b * S * W, read_weights + b * hs, add + b * H * W, alpha + b * H, l.slots, H, S, W, ww, Mn);
  float* rw = read_weights_out + b * hs;
  content_read_block(Mn, keys + b * H * W, nullptr, H, S, W, eps, nullptr, rw, reads + b * H * W, l.minv, l.kinv,
                     l.red);
  for (int s = threadIdx.x; s < S; s += kMemThreads) {
    float acc = gamma * u[s];
    for (int h = 0; h < H; ++h) acc += rw[h * S + s] + ww[h * S + s];
    usage_out[b * S + s] = acc;
  }
}

// scratch: (5, B, H, S) + (B, S, W) floats.
__global__ void __launch_bounds__(kMemThreads)
    mann_step_backward_kernel(const float* __restrict__ grad_memory_out, const float* __restrict__ grad_rw_out,
                              const float* __restrict__ grad_reads, const float* __restrict__ grad_usage_out,
                              const float* __restrict__ grad_ww, const float* __restrict__ memory,
                              const float* __restrict__ usage, const float* __restrict__ read_weights,
                              const float* __restrict__ keys, const float* __restrict__ add,
                              const float* __restrict__ alpha, float gamma, float* __restrict__ grad_memory,
                              float* __restrict__ grad_usage, float* __restrict__ grad_read_weights,
                              float* __restrict__ grad_keys, float* __restrict__ grad_add,
                              float* __restrict__ grad_alpha, float* scratch, int B, int H, int S, int W, float eps) {
  MANN_DYNAMIC_SHARED(smem);
  const SharedLayout l = shared_layout(smem, H, S);
  const int* slots = l.slots;
  const int64_t b = blockIdx.x, hs = int64_t(H) * S;
  float* ww = scratch + b * hs;
  float* w = ww + B * hs;
  float* cos = w + B * hs;
  float* g = cos + B * hs;
  float* gw = g + B * hs;
  float* Mn = scratch + 5 * B * hs + b * S * W;
  const float *rw = read_weights + b * hs, *ad = add + b * H * W, *al = alpha + b * H, *gu = grad_usage_out + b * S;
  least_used_block(usage + b * S, H, S, l.slots, l.taken, l.red, l.ri);
  write_block(memory + b * S * W, rw, ad, al, slots, H, S, W, ww, Mn);
  float* gM = grad_memory + b * S * W;
  for (int i = threadIdx.x; i < H * S; i += kMemThreads) gw[i] = grad_rw_out[b * hs + i] + gu[i % S];
  for (int i = threadIdx.x; i < S * W; i += kMemThreads) gM[i] = grad_memory_out[b * S * W + i];
  __syncthreads();
  content_read_backward_block<true>(Mn, keys + b * H * W, nullptr, gw, grad_reads + b * H * W, H, S, W, eps, gM,
                                    grad_keys + b * H * W, nullptr, w, cos, g, l.minv, l.kinv, l.ksum, l.self, l.red);
  // gM is the whole gradient of memory' = keep ⊙ memory + wwᵀ·add.
  for (int i = threadIdx.x; i < H * S; i += kMemThreads) {
    const int h = i / S, s = i % S;
    float acc = grad_ww[b * hs + i] + gu[s];
    for (int j = 0; j < W; ++j) acc += ad[h * W + j] * gM[s * W + j];
    gw[i] = acc;  // the total upstream of ww
    grad_read_weights[b * hs + i] = al[h] * acc;
  }
  for (int i = threadIdx.x; i < H * W; i += kMemThreads) {
    const int h = i / W, j = i % W;
    float acc = 0.f;
    for (int s = 0; s < S; ++s) acc += ww[h * S + s] * gM[s * W + j];
    grad_add[b * H * W + i] = acc;
  }
  __syncthreads();
  for (int h = 0; h < H; ++h) {
    float acc = 0.f;
    for (int s = threadIdx.x; s < S; s += kMemThreads) acc += gw[h * S + s] * (rw[h * S + s] - (s == slots[h]));
    acc = block_reduce<false>(acc, l.red);
    if (threadIdx.x == 0) grad_alpha[b * H + h] = acc;
  }
  for (int j = threadIdx.x; j < W; j += kMemThreads) gM[slots[0] * W + j] = 0.f;
  for (int s = threadIdx.x; s < S; s += kMemThreads) grad_usage[b * S + s] = gamma * gu[s];
}

}  // namespace
}  // namespace metalearn_ext
