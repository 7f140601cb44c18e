// Per-element mathematics shared by the CPU kernels, the CUDA kernels and the CTest
// unit tests.  Everything here is branch-free scalar code so that the CPU kernels can
// call it inside `#pragma omp simd` loops (the compiler vectorises it) and the CUDA
// kernels can call it per thread.  Keep it free of torch headers: nvcc compiles it in
// plain .cu files.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HS3C_HD __host__ __device__ __forceinline__
#else
#define HS3C_HD static inline  // internal linkage: safe to include in TUs built for different ISAs
#endif

// `#pragma omp simd` that also works inside macro arguments (AT_DISPATCH lambdas).
#if defined(_OPENMP) || defined(__clang__) || defined(__GNUC__)
#define HS3C_SIMD _Pragma("omp simd")
#else
#define HS3C_SIMD
#endif

namespace hands3c {
namespace math {

// Number of scan directions of the 2-D cross scan (SPEC §2).
constexpr int kDirections = 4;
// Largest supported state size N.
constexpr int kMaxState = 64;

HS3C_HD float bits_to_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  union { int32_t i; float f; } v; v.i = i; return v.f;
#endif
}

HS3C_HD int32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  union { int32_t i; float f; } v; v.f = f; return v.i;
#endif
}

// exp(x) for float, ~1 ulp on the range that matters, exactly 0 below -87.3 and +inf
// above 88.72.  Range reduction x = k ln2 + r with |r| <= ln2/2, then a degree-7 Taylor
// polynomial (its truncation error is below float rounding there) and 2^k by exponent bits.
HS3C_HD float exp_f(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;
  const float kLn2Lo = 1.428606765330187045e-06f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  float kf = (xc * kLog2e + kRound) - kRound;
  float r = xc - kf * kLn2Hi;
  r = r - kf * kLn2Lo;
  float p = 1.9841270e-4f;  // 1/7!
  p = p * r + 1.3888889e-3f;
  p = p * r + 8.3333333e-3f;
  p = p * r + 4.1666667e-2f;
  p = p * r + 1.6666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t ki = (int32_t)kf;
  float scale = bits_to_float((ki + 127) << 23);
  float res = p * scale;
  res = x < -87.3f ? 0.0f : res;
  res = x > 88.72f ? bits_to_float(0x7f800000) : res;
  return res;
}

// exp(x) for the CPU scans' decays exp(delta * A): the range reduction of exp_f, a degree-5
// minimax polynomial instead of the degree-7 Taylor one (max relative error 1.7e-7 in float32
// arithmetic, csrc/tests/test_scan_math.cpp; SPEC §4's float32 rtol is 6e-4), and no selects:
// x is clamped so that k = round(x log2 e) stays in [-127, 128], where the exponent bits of 2^k
// are 0 (the result is 0, from x = -87.68) or all ones (+inf, from x = 88.38, where exp(x) is
// already 2.4e38: a decay that large overflows the state anyway).  15 vector operations instead
// of exp_f's 21.
HS3C_HD float exp_fast_f(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;
  const float kLn2Lo = 1.428606765330187045e-06f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float xc = x < -88.03f ? -88.03f : x;
  xc = xc > 88.73f ? 88.73f : xc;
  float kf = (xc * kLog2e + kRound) - kRound;
  float r = xc - kf * kLn2Hi;
  r = r - kf * kLn2Lo;
  float p = 8.290305734e-03f;
  p = p * r + 4.189797491e-02f;
  p = p * r + 1.666763723e-01f;
  p = p * r + 4.999915063e-01f;
  p = p * r + 9.999997020e-01f;
  p = p * r + 1.0f;
  int32_t ki = (int32_t)kf;
  return p * bits_to_float((ki + 127) << 23);
}

// log(y) for finite y > 0 (softplus only needs [1, 2]), ~1 ulp.  Splits y = m * 2^e with
// m in [sqrt(1/2), sqrt(2)) and uses the atanh series of s = (m-1)/(m+1).
HS3C_HD float log_1to2_f(float y) {
  int32_t bits = float_to_bits(y);
  // Move m into [sqrt(1/2), sqrt(2)): y >= sqrt(2) uses e = 1.
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // mantissa in [1,2)
  int32_t big = m >= 1.41421356f ? 1 : 0;
  m = big ? m * 0.5f : m;
  float e = (float)big + (float)(((bits >> 23) & 0xff) - 127);
  float s = (m - 1.0f) / (m + 1.0f);
  float s2 = s * s;
  float q = 0.11111111f;  // 1/9
  q = q * s2 + 0.14285715f;
  q = q * s2 + 0.2f;
  q = q * s2 + 0.33333334f;
  q = q * s2 + 1.0f;
  return 2.0f * s * q + e * 0.693147180559945f;
}

// log(1 + t) for t in [0, 1], accurate for tiny t: log(1+t) = log(u) * t / (u - 1), u = 1+t.
HS3C_HD float log1p_unit_f(float t) {
  float u = 1.0f + t;
  float d = u - 1.0f;
  float l = log_1to2_f(u);
  // Division on a safe denominator and a select afterwards (no branch), so SIMD loops vectorise.
  float dsafe = d == 0.0f ? 1.0f : d;
  float r = l * (t / dsafe);
  return d == 0.0f ? t : r;
}

// softplus(x) = log(1 + e^x), computed as max(x,0) + log1p(e^-|x|) so it never overflows.
// Matches torch's softplus (threshold 20) to float rounding: above 20 the correction term
// is < 2.1e-9 and vanishes in the sum.
HS3C_HD float softplus_f(float x) {
  float ax = x < 0.0f ? -x : x;
  float pos = x > 0.0f ? x : 0.0f;
  return pos + log1p_unit_f(exp_f(-ax));
}

// d softplus(x) / dx = sigmoid(x).
HS3C_HD float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

HS3C_HD float silu_f(float x) { return x * sigmoid_f(x); }

// d silu(x)/dx = s (1 + x (1 - s)), s = sigmoid(x).
HS3C_HD float silu_grad_f(float x) {
  float s = sigmoid_f(x);
  return s * (1.0f + x * (1.0f - s));
}

// Zero-order-hold discretisation of one state: dA = exp(delta * a), dBu = delta * b * u.
HS3C_HD float discrete_decay(float delta, float a) { return exp_f(delta * a); }

// The scan's combine operator on affine maps h -> a h + b.  Applying (a1,b1) then (a2,b2)
// gives (a1 a2, a2 b1 + b2); it is associative, which is what chunked scans rely on.
struct AffinePair { float a; float b; };
HS3C_HD AffinePair combine(AffinePair first, AffinePair second) {
  AffinePair r;
  r.a = first.a * second.a;
  r.b = second.a * first.b + second.b;
  return r;
}

// Traversal index map of the cross scan: the plane position (row-major index p*Q + q)
// visited at step l of direction k over a P x Q plane.
//   k=0 row-major, k=1 column-major, k=2 reverse of k=0, k=3 reverse of k=1.
HS3C_HD int64_t direction_position(int k, int64_t l, int64_t P, int64_t Q) {
  int64_t L = P * Q;
  int64_t s = (k >= 2) ? (L - 1 - l) : l;
  if ((k & 1) == 0) return s;
  int64_t q = s / P;
  int64_t p = s - q * P;
  return p * Q + q;
}

// LayerNorm-then-gate of the S3C merge, per element once the row statistics are known:
// out = ((x - mean) * rstd * w + b) * silu(z).
HS3C_HD float merge_apply(float x, float mean, float rstd, float w, float b, float z) {
  return ((x - mean) * rstd * w + b) * silu_f(z);
}

}  // namespace math
}  // namespace hands3c
