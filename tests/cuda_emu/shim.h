// Just enough CUDA for csrc/cuda/vsml_step_kernels.cuh to run on the CPU: one std::thread per CUDA
// thread of a block, blocks one after another, real barriers for __syncthreads / __syncwarp, shared
// memory poisoned with NaN before every block. Slow, and meant only for small correctness cases.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local dim3 threadIdx, blockIdx;
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
using std::max;
using std::min;

// __expf is exp2(x·log2 e) in hardware; the emulator does the same in float.
inline float __expf(float x) { return std::exp2(x * 1.44269504088896341f); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T>
inline T __ldg(const T* p) { return *p; }

namespace cuda_emu {
inline float4* shared = nullptr;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>>* warp_barriers = nullptr;
inline float shuffle_slots[1024];
}  // namespace cuda_emu

inline void __syncthreads() { cuda_emu::block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { (*cuda_emu::warp_barriers)[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  __syncwarp();
  cuda_emu::shuffle_slots[threadIdx.x] = v;
  __syncwarp();
  const float r = cuda_emu::shuffle_slots[(threadIdx.x & ~31u) | ((threadIdx.x & 31u) ^ lane_mask)];
  __syncwarp();
  return r;
}
inline void atomicAdd(float* p, float v) { std::atomic_ref<float>(*p).fetch_add(v); }

#define VSML_DYNAMIC_SHARED(name) float4* name = cuda_emu::shared
#define TORCH_CHECK(cond, ...) \
  do {                         \
    if (!(cond)) throw std::runtime_error("check failed: " #cond); \
  } while (0)
#define TORCH_CHECK_VALUE TORCH_CHECK

namespace cuda_emu {
// Runs kernel() as `blocks` blocks of `threads` threads, one block at a time.
template <class Kernel>
void launch(unsigned blocks, unsigned threads, size_t smem_bytes, Kernel&& kernel) {
  if (smem_bytes % sizeof(float4)) throw std::runtime_error("shared memory not a multiple of 16 bytes");
  std::vector<float4> smem(smem_bytes / sizeof(float4));
  for (unsigned block = 0; block < blocks; ++block) {
    for (auto& v : smem) v = {NAN, NAN, NAN, NAN};
    shared = smem.data();
    std::barrier<> bar(threads);
    block_barrier = &bar;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(new std::barrier<>(32));
    warp_barriers = &warps;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t, block] {
        threadIdx.x = t;
        blockIdx.x = block;
        kernel();
      });
    for (auto& th : pool) th.join();
  }
}
}  // namespace cuda_emu
