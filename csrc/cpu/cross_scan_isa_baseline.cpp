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
#define HS3C_OPS_PER_UPDATE 23  // 92 SSE2 instructions per 16 lanes (objdump): no FMA, each FMA is a multiply and an add
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
// No FMA instruction here: each accumulator update is a multiply and an add, so the rate is given in
// operations of 16 floats (twice the update rate), the unit HS3C_OPS_PER_UPDATE counts in.
double fma_peak_baseline(int64_t steps) { return 2.0 * xs_isa_baseline::fma_peak(steps); }
double backward_update_peak_baseline(int64_t steps) { return xs_isa_baseline::backward_update_peak(steps); }
int ops_per_update_baseline() { return xs_isa_baseline::kOpsPerUpdate; }
}  // namespace xs
}  // namespace cpu
}  // namespace hands3c

#ifdef HS3C_TARGET_PUSHED
#pragma GCC pop_options
#endif
