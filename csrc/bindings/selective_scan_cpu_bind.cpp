// Registers the CPU kernels of hands3c::selective_scan_fwd / selective_scan_bwd (csrc/cpu/selective_scan_cpu.cpp).
#include <torch/library.h>

#include "cpu/cpu_ops.h"

TORCH_LIBRARY_IMPL(hands3c, CPU, m) {
  m.impl("selective_scan_fwd", &hands3c::cpu::selective_scan_fwd);
  m.impl("selective_scan_bwd", &hands3c::cpu::selective_scan_bwd);
}
