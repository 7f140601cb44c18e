// Instruction-set detection shared by the CPU kernels' dispatchers (cross_scan_cpu.cpp,
// selective_scan_cpu.cpp), which pick one of their per-ISA builds (*_isa_*.cpp) at run time.
#pragma once

namespace hands3c {
namespace cpu {

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

}  // namespace cpu
}  // namespace hands3c
