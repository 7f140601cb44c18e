// Instruction-set choice shared by the two CPU scan engines (cross_scan_cpu.cpp,
// selective_scan_cpu.cpp), each compiled once per instruction set in <op>_isa_<isa>.cpp.
//
// Naming, the same for both engines: the kernel header (<op>_kernel.h) is included inside the
// namespace named by HS3C_ISA_NAMESPACE (xs_isa_avx2, ss_isa_avx2, ...), and each shim exports
// <engine>::forward_<isa> / <engine>::backward_<isa> from the engine's dispatch header
// (xs:: for the cross scan, ss:: for the selective scan).
//
// Only the host translation units include this file, so no inline function here is compiled
// under a `#pragma GCC target`.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace hands3c {
namespace cpu {

// Ordered from widest to narrowest: an override may pick a build at or after the best one.
enum class Isa { kAvx512, kAvx2, kBaseline };

// The best build this CPU can run, detected once.
inline Isa best_isa() {
  static const Isa isa = [] {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
    return Isa::kBaseline;
  }();
  return isa;
}

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

// The build both scan engines run: the best supported one, or the one named by the environment
// variable HANDS3C_CPU_ISA (avx512 / avx2 / baseline).  Read at every call, not cached, so the
// tests can compare every build in one process.
inline Isa selected_isa() {
  const Isa best = best_isa();
  const char* env = std::getenv("HANDS3C_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  Isa isa = Isa::kBaseline;
  if (want == "baseline") isa = Isa::kBaseline;
  else if (want == "avx2") isa = Isa::kAvx2;
  else if (want == "avx512") isa = Isa::kAvx512;
  else TORCH_CHECK_VALUE(false, "HANDS3C_CPU_ISA must be avx512, avx2 or baseline, got '", want, "'");
  TORCH_CHECK(static_cast<int>(isa) >= static_cast<int>(best), "HANDS3C_CPU_ISA=", want,
              " is not supported by this CPU (best: ", isa_name(best), ")");
  return isa;
}

}  // namespace cpu
}  // namespace hands3c
