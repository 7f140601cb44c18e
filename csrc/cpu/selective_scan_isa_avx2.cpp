// The selective-scan kernels compiled for one instruction set (avx2); selective_scan_cpu.cpp
// picks the best one the running CPU supports.  Headers with inline functions are included
// before the target pragma so that only this file's own kernels get the wider instructions.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu/selective_scan_dispatch.h"
#include "hands3c/scan_math.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
#define HS3C_TARGET_PUSHED 1
#endif

#define HS3C_ISA_NAMESPACE ss_isa_avx2
#include "cpu/selective_scan_kernel.h"

namespace hands3c {
namespace cpu {
namespace ss {
void forward_avx2(const Problem& p, const Plan& plan, const FwdOut& o) { ss_isa_avx2::forward(p, plan, o); }
void backward_avx2(const Problem& p, const Plan& plan, const BwdIO& io) { ss_isa_avx2::backward(p, plan, io); }
}  // namespace ss
}  // namespace cpu
}  // namespace hands3c

#ifdef HS3C_TARGET_PUSHED
#pragma GCC pop_options
#endif
