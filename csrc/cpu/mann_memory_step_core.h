// The CPU core of one LRUA memory step (csrc/cpu/mann_memory_step.cpp), on raw pointers, for the ops that
// run it: metalearn_ext::mann_memory_step and the whole-episode metalearn_ext::mann_episode.
#pragma once

#include <cstdint>

namespace metalearn_ext::cpu {

// Every array is contiguous with the batch outermost: memory (B,S,W), usage (B,S), read weights and write
// weights (B,H,S), keys, add and reads (B,H,W), alpha (B,H).
template <typename T>
struct MannStepArgs {
  const T *M, *u, *rw, *K, *add, *alpha;
  T gamma;
  // forward outputs
  T *M_out, *rw_out, *reads, *u_out, *ww;
  // backward: upstream gradients and input gradients
  const T *gM_out, *grw_out, *greads, *gu_out, *gww;
  T *gM, *gu, *grw, *gK, *gadd, *galpha;
  int64_t S, H, W;
  // Optional (nullptr: not given). The forward writes the H least-used slots of every b, smallest usage first,
  // to slots_out (B,H); the backward takes them from slots_in instead of choosing them again, and the memory
  // after the step from M_out_in (B,S,W) instead of recomputing the write.
  int64_t* slots_out;
  const int64_t* slots_in;
  const T* M_out_in;
};

// The forward (reads the inputs, writes the forward outputs) or the backward (reads the inputs and the
// upstream gradients, recomputes the step, writes the input gradients) of B memory steps; float and double.
template <typename T>
void mann_step_run(const MannStepArgs<T>& a, int64_t B, bool backward);

}  // namespace metalearn_ext::cpu
