// Runs the fused CUDA kernels of vsml_step on the CPU (see shim.h) for tests/ops/test_vsml_step_cuda_emulated.py.
// usage: emu T A B N ticks Tw fwd_blocks bwd_blocks IN OUT
//   IN:  float32 h, c (T,A,B,N), row (T,A,4N), col (T,B,4N), w_h (Tw,4N,N), grad_h, grad_c (T,A,B,N),
//        grad_fwd_mean (T,B,N), grad_bwd_mean (T,A,N)
//   OUT: float32 h', c', fwd_mean, bwd_mean, grad_h0, grad_c0, g_row, g_col, g_wh (T,4N,N)
//   fwd_blocks / bwd_blocks: the launch's target block count, which sets the tile size (passes).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "shim.h"
#include "cuda/vsml_step_kernels.cuh"

namespace metalearn_ext {
namespace {

template <int N>
void run(int64_t T, int64_t A, int64_t B, int ticks, int64_t Tw, int64_t fwd_blocks, int64_t bwd_blocks, FILE* in,
         FILE* out) {
  const int64_t S = T * A * B * N, G = 4 * N;
  auto read = [&](int64_t n) {
    std::vector<float> v(n);
    if (std::fread(v.data(), sizeof(float), n, in) != static_cast<size_t>(n)) throw std::runtime_error("short input");
    return v;
  };
  auto h = read(S), c = read(S), row = read(T * A * G), col = read(T * B * G), w = read(Tw * G * N);
  auto gh = read(S), gc = read(S), gfm = read(T * B * N), gbm = read(T * A * N);
  // Outputs the kernels must write start as NaN; accumulators start at zero, as the host code zeroes them.
  std::vector<float> ho(S, NAN), co(S, NAN), fm(T * B * N, 0.f), bm(T * A * N, 0.f);
  const Geometry fg =
      make_geometry<kForwardThreads / N>(T, A, B, ticks, Tw != 1, kForwardMaxPasses, fwd_blocks, "emu");
  cuda_emu::launch(T * fg.tiles_per_t, kForwardThreads, forward_smem_bytes<N>(fg), [&] {
    vsml_forward_kernel<N>(h.data(), c.data(), row.data(), col.data(), w.data(), ho.data(), co.data(), fm.data(),
                           bm.data(), fg);
  });
  std::vector<float> gh0(S, NAN), gc0(S, NAN), grow(T * A * G, 0.f), gcol(T * B * G, 0.f), gwh(T * G * N, 0.f);
  const Geometry bg =
      make_geometry<kBackwardThreads / N>(T, A, B, ticks, Tw != 1, kBackwardMaxPasses, bwd_blocks, "emu");
  cuda_emu::launch(T * bg.tiles_per_t, kBackwardThreads, backward_smem_bytes<N>(bg), [&] {
    vsml_backward_kernel<N>(gh.data(), gc.data(), gfm.data(), gbm.data(), h.data(), c.data(), row.data(), col.data(),
                            w.data(), gh0.data(), gc0.data(), grow.data(), gcol.data(), gwh.data(), bg);
  });
  for (auto* v : {&ho, &co, &fm, &bm, &gh0, &gc0, &grow, &gcol, &gwh}) std::fwrite(v->data(), sizeof(float), v->size(), out);
}

}  // namespace
}  // namespace metalearn_ext

int main(int argc, char** argv) {
  if (argc != 11) {
    std::fprintf(stderr, "usage: emu T A B N ticks Tw fwd_blocks bwd_blocks IN OUT\n");
    return 2;
  }
  const int64_t T = std::atoll(argv[1]), A = std::atoll(argv[2]), B = std::atoll(argv[3]), N = std::atoll(argv[4]);
  const int ticks = std::atoi(argv[5]);
  const int64_t Tw = std::atoll(argv[6]), fb = std::atoll(argv[7]), bb = std::atoll(argv[8]);
  FILE* in = std::fopen(argv[9], "rb");
  FILE* out = std::fopen(argv[10], "wb");
  if (!in || !out) return 2;
  if (N == 8) metalearn_ext::run<8>(T, A, B, ticks, Tw, fb, bb, in, out);
  else if (N == 16) metalearn_ext::run<16>(T, A, B, ticks, Tw, fb, bb, in, out);
  else if (N == 32) metalearn_ext::run<32>(T, A, B, ticks, Tw, fb, bb, in, out);
  else return 2;
  return std::fclose(out) == 0 ? 0 : 1;
}
