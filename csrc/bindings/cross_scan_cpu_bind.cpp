// Registers the CPU kernels of hands3c::cross_scan_fwd / cross_scan_bwd (csrc/cpu/cross_scan_cpu.cpp).
#include <torch/library.h>

#include "cpu/cpu_ops.h"

TORCH_LIBRARY_IMPL(hands3c, CPU, m) {
  m.impl("cross_scan_fwd", &hands3c::cpu::cross_scan_fwd);
  m.impl("cross_scan_bwd", &hands3c::cpu::cross_scan_bwd);
}
