// Registers the CPU kernels of hands3c::s3c_merge_fwd / s3c_merge_bwd (csrc/cpu/s3c_merge_cpu.cpp).
#include <torch/library.h>

#include "cpu/cpu_ops.h"

TORCH_LIBRARY_IMPL(hands3c, CPU, m) {
  m.impl("s3c_merge_fwd", &hands3c::cpu::s3c_merge_fwd);
  m.impl("s3c_merge_bwd", &hands3c::cpu::s3c_merge_bwd);
}
