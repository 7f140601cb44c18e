// The cross-scan kernels compiled for one instruction set (avx512); cross_scan_cpu.cpp picks
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
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2")
#define HS3C_TARGET_PUSHED 1
#endif

#define HS3C_ISA_NAMESPACE xs_isa_avx512
#define HS3C_OPS_PER_UPDATE 15  // 15 zmm operations per state and 16 lanes (cross_scan_kernel.h, state_update_peak)
#include "cpu/cross_scan_kernel.h"

namespace hands3c {
namespace cpu {
namespace xs {
void forward_avx512(const CrossScanArgs& s, float* out, float* ckpt) {
  xs_isa_avx512::forward(s, out, ckpt);
}
void backward_avx512(const CrossScanArgs& s, const CrossScanGrads& g) {
  xs_isa_avx512::backward(s, g);
}
double state_update_peak_avx512(int64_t steps) { return xs_isa_avx512::state_update_peak(steps); }
double fma_peak_avx512(int64_t steps) { return xs_isa_avx512::fma_peak(steps); }
double backward_update_peak_avx512(int64_t steps) { return xs_isa_avx512::backward_update_peak(steps); }
int ops_per_update_avx512() { return xs_isa_avx512::kOpsPerUpdate; }
}  // namespace xs
}  // namespace cpu
}  // namespace hands3c

#ifdef HS3C_TARGET_PUSHED
#pragma GCC pop_options
#endif
