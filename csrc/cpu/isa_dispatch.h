// Runtime ISA dispatch without -march, safe on any x86-64: a kernel compiles its hot loop several
// times, for x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and the baseline (SSE2), by marking entry
// points METALEARN_TARGET_V4 / METALEARN_TARGET_V3 (everything they call is always-inlined, so it is
// built for that ISA too), and picks one at run time with x86_level(). GCC >= 12 on Linux knows these
// levels; elsewhere (aarch64, clang, older GCC) METALEARN_X86_DISPATCH is 0 and only the baseline
// build exists.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__linux__)
#define METALEARN_X86_DISPATCH 1
#define METALEARN_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define METALEARN_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define METALEARN_X86_DISPATCH 0
#endif

namespace metalearn_ext::cpu {

constexpr int kIsaBaseline = 0, kIsaAvx2 = 1, kIsaAvx512 = 2;

// The best build this CPU runs: kIsaAvx512 (x86-64-v4), kIsaAvx2 (x86-64-v3) or kIsaBaseline.
// METALEARN_CPU_ISA=avx2|baseline caps it (read once per process), so that tests can cover every
// build on one machine.
inline int x86_level() {
#if METALEARN_X86_DISPATCH
  static const int level = [] {
    __builtin_cpu_init();
    int l = __builtin_cpu_supports("x86-64-v4") ? kIsaAvx512 : __builtin_cpu_supports("x86-64-v3") ? kIsaAvx2
                                                                                                   : kIsaBaseline;
    if (const char* cap = std::getenv("METALEARN_CPU_ISA")) {
      if (std::strcmp(cap, "avx2") == 0) l = std::min(l, kIsaAvx2);
      if (std::strcmp(cap, "baseline") == 0) l = kIsaBaseline;
    }
    return l;
  }();
  return level;
#else
  return kIsaBaseline;
#endif
}

}  // namespace metalearn_ext::cpu
