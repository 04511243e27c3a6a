// Runs the CUDA kernels of content_read and mann_memory_step on the CPU (see shim.h) for
// tests/ops/test_content_read_cuda_emulated.py.
// usage: mann_emu content_read B H S W has_beta IN OUT
//   IN:  float32 memory (B,S,W), keys (B,H,W), [beta (B,H)], grad_weights (B,H,S), grad_reads (B,H,W)
//   OUT: weights, reads, grad_memory, grad_keys, [grad_beta]
// usage: mann_emu mann_memory_step B H S W gamma IN OUT
//   IN:  float32 memory, usage, read_weights, keys, add, alpha, then the five upstream gradients
//   OUT: memory', read_weights', reads, usage', write_weights, then the six input gradients
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "shim.h"
#define MANN_DYNAMIC_SHARED(name) float* name = reinterpret_cast<float*>(cuda_emu::shared)
#include "cuda/content_read_kernels.cuh"

namespace {

using Buf = std::vector<float>;

Buf read(FILE* in, int64_t n) {
  Buf v(n);
  if (std::fread(v.data(), sizeof(float), n, in) != static_cast<size_t>(n)) throw std::runtime_error("short input");
  return v;
}

size_t smem(int64_t H, int64_t S, bool slots) {
  return (metalearn_ext::memory_smem_bytes(H, S, slots) + 15) / 16 * 16;
}

void write_all(FILE* out, std::initializer_list<const Buf*> bufs) {
  for (const Buf* v : bufs) std::fwrite(v->data(), sizeof(float), v->size(), out);
}

void content_read(int B, int H, int S, int W, bool has_beta, FILE* in, FILE* out) {
  using namespace metalearn_ext;
  Buf M = read(in, B * S * W), K = read(in, B * H * W), beta = has_beta ? read(in, B * H) : Buf();
  Buf gW = read(in, B * H * S), gR = read(in, B * H * W);
  // Outputs start as NaN: an element the kernels forget to write fails the comparison.
  Buf w(B * H * S, NAN), r(B * H * W, NAN), gM(B * S * W, NAN), gK(B * H * W, NAN), gb(B * H, NAN);
  Buf scratch(3 * B * H * S, NAN);
  const float eps = 1e-8f;  // kCosEps of csrc/content_read.h (which needs ATen)
  const float* bp = has_beta ? beta.data() : nullptr;
  cuda_emu::launch(B, kMemThreads, smem(H, S, false),
                   [&] { content_read_forward_kernel(M.data(), K.data(), bp, w.data(), r.data(), H, S, W, eps); });
  cuda_emu::launch(B, kMemThreads, smem(H, S, false), [&] {
    content_read_backward_kernel(gW.data(), gR.data(), M.data(), K.data(), bp, gM.data(), gK.data(),
                                 has_beta ? gb.data() : nullptr, scratch.data(), B, H, S, W, eps);
  });
  write_all(out, {&w, &r, &gM, &gK});
  if (has_beta) write_all(out, {&gb});
}

void mann_memory_step(int B, int H, int S, int W, float gamma, FILE* in, FILE* out) {
  using namespace metalearn_ext;
  Buf M = read(in, B * S * W), u = read(in, B * S), rw = read(in, B * H * S), K = read(in, B * H * W);
  Buf add = read(in, B * H * W), alpha = read(in, B * H);
  Buf gMo = read(in, B * S * W), grwo = read(in, B * H * S), gr = read(in, B * H * W), guo = read(in, B * S);
  Buf gww = read(in, B * H * S);
  Buf Mo(B * S * W, NAN), rwo(B * H * S, NAN), reads(B * H * W, NAN), uo(B * S, NAN), ww(B * H * S, NAN);
  Buf gM(B * S * W, NAN), gu(B * S, NAN), grw(B * H * S, NAN), gK(B * H * W, NAN), gadd(B * H * W, NAN);
  Buf galpha(B * H, NAN), scratch(5 * B * H * S + B * S * W, NAN);
  const float eps = 1e-8f;  // kCosEps of csrc/content_read.h (which needs ATen)
  cuda_emu::launch(B, kMemThreads, smem(H, S, true), [&] {
    mann_step_forward_kernel(M.data(), u.data(), rw.data(), K.data(), add.data(), alpha.data(), gamma, Mo.data(),
                             rwo.data(), reads.data(), uo.data(), ww.data(), H, S, W, eps);
  });
  cuda_emu::launch(B, kMemThreads, smem(H, S, true), [&] {
    mann_step_backward_kernel(gMo.data(), grwo.data(), gr.data(), guo.data(), gww.data(), M.data(), u.data(),
                              rw.data(), K.data(), add.data(), alpha.data(), gamma, gM.data(), gu.data(), grw.data(),
                              gK.data(), gadd.data(), galpha.data(), scratch.data(), B, H, S, W, eps);
  });
  write_all(out, {&Mo, &rwo, &reads, &uo, &ww, &gM, &gu, &grw, &gK, &gadd, &galpha});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: mann_emu content_read|mann_memory_step B H S W has_beta|gamma IN OUT\n");
    return 2;
  }
  const std::string op = argv[1];
  const int B = std::atoi(argv[2]), H = std::atoi(argv[3]), S = std::atoi(argv[4]), W = std::atoi(argv[5]);
  FILE* in = std::fopen(argv[7], "rb");
  FILE* out = std::fopen(argv[8], "wb");
  if (!in || !out) return 2;
  if (op == "content_read") content_read(B, H, S, W, std::atoi(argv[6]) != 0, in, out);
  else if (op == "mann_memory_step") mann_memory_step(B, H, S, W, std::strtof(argv[6], nullptr), in, out);
  else return 2;
  return std::fclose(out) == 0 ? 0 : 1;
}
