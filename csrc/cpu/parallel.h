// How the CPU kernels split work over at::parallel_for: a few equal contiguous ranges of rows, one
// per thread, and none at all for problems too small to pay for a fork/join.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace metalearn_ext::cpu {

// Rows [r0, r1) of chunk `chunk` out of `nchunks` equal contiguous ranges of `rows` rows.
inline void chunk_rows(int64_t rows, int64_t nchunks, int64_t chunk, int64_t& r0, int64_t& r1) {
  r0 = rows * chunk / nchunks;
  r1 = rows * (chunk + 1) / nchunks;
}

// How many ranges to run `rows` rows costing `flops` in all: 1 below ~10^5 flops (a few microseconds
// of fork/join are not worth it) or when already inside a parallel region, else one per thread.
inline int64_t choose_chunks(int64_t rows, int64_t flops) {
  if (flops < (int64_t{1} << 17) || at::in_parallel_region()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
}

}  // namespace metalearn_ext::cpu
