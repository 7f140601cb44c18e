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

// 2^x for the CPU scans' decays, with x = delta * (A log2 e): the kernels scale A by log2 e
// once per channel, so the step needs no multiply by log2 e and no two-part ln 2 reduction.
// Rounding k = round(x) by adding M = 1.5 * 2^23 + 127 leaves k + 127 in the low bits of t's
// representation; shifting those bits left by 23 is the float 2^k (the rest of t's bits fall
// off the top), so no float->int conversion and no separate bias add are needed.  r = x - k is
// exact, and 2^r on [-1/2, 1/2] is a degree-5 polynomial with p(0) = 1 fitted for minimax
// relative error (9e-8 in exact arithmetic; the whole function stays below 2e-7 in float32,
// csrc/tests/test_scan_math.cpp).  Valid for x <= 128 (the caller guarantees it: a decay has
// delta >= 0 and A < 0, so x <= 0); below -127 the clamp makes the exponent bits 0, the result
// 0 (2^-127 is already below float's normal range).  10 vector operations plus the clamp.
HS3C_HD float exp2_decay_f(float x) {
  const float kMagic = 12583039.0f;  // 1.5 * 2^23 + 127
  const float xc = x < -127.0f ? -127.0f : x;
  const float t = xc + kMagic;
  const float r = xc - (t - kMagic);
  float p = 1.326472731e-03f;
  p = p * r + 9.671512991e-03f;
  p = p * r + 5.550733581e-02f;
  p = p * r + 2.402224243e-01f;
  p = p * r + 6.931470037e-01f;
  p = p * r + 1.0f;
  const uint32_t e = (uint32_t)float_to_bits(t) << 23;
  return p * bits_to_float((int32_t)e);
}

// exp2_decay_f for any x: also clamped above at 128, so that the exponent bits are all ones and
// the result +inf above x = 127.5 (where 2^x is within a factor 1.5 of float's largest value; the
// selective scan accepts A of either sign).
HS3C_HD float exp2_fast_f(float x) { return exp2_decay_f(x > 128.0f ? 128.0f : x); }

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

// softplus for the CPU scans' delta, without a division: max(x, 0) + log1p(t), t = exp(-|x|) in
// (0, 1].  t comes from a round-to-integer reduction with a two-part ln 2 (which keeps its relative error at
// float rounding even for large |x|, where t is the whole result), and log1p(t) = t P(t) with
// P a degree-7 polynomial on [0, 1], P(0) = 1, fitted for minimax relative error (2.2e-7), so
// tiny results (x very negative) keep their relative accuracy.  From x = -87.68 down the result
// is 0 (exp(x) is below float's normal range there; softplus_f's is 0 from -87.3).  Max relative error 4e-7 over [-87, 87] in float32 arithmetic
// (csrc/tests/test_scan_math.cpp), about 25 vector operations against softplus_f's ~45 and
// three divisions.
HS3C_HD float softplus_fast_f(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;
  const float kLn2Lo = 1.428606765330187045e-06f;
  const float kMagic = 12583039.0f;  // 1.5 * 2^23 + 127, as in exp2_decay_f
  const float ax = x < 0.0f ? -x : x;
  const float pos = x > 0.0f ? x : 0.0f;
  float n = -ax;
  n = n < -88.0f ? -88.0f : n;  // k = -127 from x = -87.68: exponent bits 0, t = 0
  const float tk = n * kLog2e + kMagic;
  const float kf = tk - kMagic;
  float r = n - kf * kLn2Hi;
  r = r - kf * kLn2Lo;
  float p = 8.290305734e-03f;  // degree-5 minimax for e^r, |r| <= ln2 / 2
  p = p * r + 4.189797491e-02f;
  p = p * r + 1.666763723e-01f;
  p = p * r + 4.999915063e-01f;
  p = p * r + 9.999997020e-01f;
  p = p * r + 1.0f;
  const uint32_t e = (uint32_t)float_to_bits(tk) << 23;
  const float t = p * bits_to_float((int32_t)e);
  float q = -8.778942749e-03f;
  q = q * t + 4.498660192e-02f;
  q = q * t - 1.090228558e-01f;
  q = q * t + 1.784720421e-01f;
  q = q * t - 2.453686446e-01f;
  q = q * t + 3.328406513e-01f;
  q = q * t - 4.999817908e-01f;
  const float tq = t * q;
  return pos + (tq * t + t);
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
