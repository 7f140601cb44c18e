// The cross-scan kernels compiled for one instruction set (baseline); cross_scan_cpu.cpp picks
// the best one the running CPU supports.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cross_scan_dispatch.h"
#include "hands3c/scan_math.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC push_options
// Baseline x86-64: the compiler's default target.
#define HS3C_TARGET_PUSHED 1
#endif

#define HS3C_ISA_NAMESPACE xs_isa_baseline
#include "cpu/cross_scan_kernel.h"

namespace hands3c {
namespace cpu {
namespace xs {
void forward_baseline(const CrossScanArgs& s, float* out, float* ckpt) {
  xs_isa_baseline::forward(s, out, ckpt);
}
void backward_baseline(const CrossScanArgs& s, const CrossScanGrads& g) {
  xs_isa_baseline::backward(s, g);
}
double state_update_peak_baseline(int64_t steps) { return xs_isa_baseline::state_update_peak(steps); }
}  // namespace xs
}  // namespace cpu
}  // namespace hands3c

#ifdef HS3C_TARGET_PUSHED
#pragma GCC pop_options
#endif
