// The few CUDA facilities the kernels use, behind names that also exist in the CPU emulation
// build (HS3C_EMULATE, see emu/emu.h): the kernels are written once and the emulation runs
// their exact code on the host, so the CUDA code is exercised by tests on machines without
// a GPU.  Kernels therefore use only: thread/block indices, dynamic shared memory
// (HS3C_DYN_SMEM), __syncthreads (reached by every thread of a block), and the dtype helpers
// below.  No warp shuffles, no atomics.
#pragma once

#include <stdint.h>

#if defined(HS3C_EMULATE)
#include "cuda/emu/emu.h"
#define HS3C_DYN_SMEM(name) float* name = ::hs3c_emu::dynamic_smem()
#define HS3C_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::hs3c_emu::launch(kernel, grid, block, smem, __VA_ARGS__)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define HS3C_DYN_SMEM(name)                       \
  extern __shared__ float4 hs3c_dyn_smem_raw[];   \
  float* name = reinterpret_cast<float*>(hs3c_dyn_smem_raw)
#define HS3C_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)
#endif

#include "cuda/launch.h"
#include "hands3c/scan_math.h"

#define HS3C_DEV __device__ __forceinline__

namespace hands3c {
namespace cuda {

// ---- float <-> half / bfloat16 (round to nearest even) ---------------------------------
// On the device the hardware conversions; on the host (emulation) bit-exact equivalents.

HS3C_DEV float half_bits_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t ex = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float mag;
  if (ex == 0) {
    mag = (float)mant * 5.9604644775390625e-8f;  // subnormal: mant * 2^-24 (exact)
    return sign ? -mag : mag;
  }
  const uint32_t bits = ex == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((ex + 112u) << 23) | (mant << 13));
  return hands3c::math::bits_to_float((int32_t)bits);
#endif
}

HS3C_DEV uint16_t float_to_half_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  const uint32_t x = (uint32_t)hands3c::math::float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half, round(|f| * 2^24) to nearest even
    const float t = hands3c::math::bits_to_float((int32_t)ax) * 16777216.0f;
    uint32_t r = (uint32_t)t;  // truncation, then round half to even by hand
    const float rem = t - (float)r;
    if (rem > 0.5f || (rem == 0.5f && (r & 1u))) ++r;
    return (uint16_t)(sign | r);
  }
  const uint32_t m = ax & 0x7fffffu, hm = m >> 13, rem = m & 0x1fffu;
  uint32_t res = ((((ax >> 23) - 112u) << 10) | hm);
  if (rem > 0x1000u || (rem == 0x1000u && (hm & 1u))) ++res;  // a carry moves into the exponent
  return (uint16_t)(sign | res);
#endif
}

HS3C_DEV float bf16_bits_to_float(uint16_t h) { return hands3c::math::bits_to_float((int32_t)((uint32_t)h << 16)); }

HS3C_DEV uint16_t float_to_bf16_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  const uint32_t x = (uint32_t)hands3c::math::float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // quiet NaN
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
#endif
}

// Typed element access by a runtime dtype tag.  The tag is uniform over a launch, so the
// branch costs nothing measurable next to the scan's exponentials, and one kernel binary
// serves all three input dtypes (3x fewer template instantiations, i.e. compile time).
HS3C_DEV float load_f(const void* p, int dtype, int64_t i) {
  if (dtype == kFloat32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dtype == kFloat16 ? half_bits_to_float(h) : bf16_bits_to_float(h);
}

HS3C_DEV void store_f(void* p, int dtype, int64_t i, float v) {
  if (dtype == kFloat32) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<uint16_t*>(p)[i] = dtype == kFloat16 ? float_to_half_bits(v) : float_to_bf16_bits(v);
  }
}

}  // namespace cuda
}  // namespace hands3c
