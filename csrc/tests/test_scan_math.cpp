// CTest unit tests of the header-only math shared by the CPU and CUDA kernels.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>

#include "hands3c/scan_math.h"

using namespace hands3c::math;

static int failures = 0;

static void check_rel(const char* what, double got, double want, double rtol, double atol) {
  double err = std::fabs(got - want);
  if (!(err <= atol + rtol * std::fabs(want))) {
    std::printf("FAIL %s: got %.9g want %.9g (err %.3g)\n", what, got, want, err);
    ++failures;
  }
}

int main() {
  // exp over the whole useful range, against double precision.
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    float x = -87.0f + 175.0f * (float)i / 200000.0f;
    double want = std::exp((double)x);
    double rel = std::fabs(exp_f(x) - want) / want;
    if (rel > worst) worst = rel;
  }
  if (worst > 3e-7) { std::printf("FAIL exp_f worst relative error %.3g\n", worst); ++failures; }
  check_rel("exp_f(-200)", exp_f(-200.0f), 0.0, 0, 0);
  if (!std::isinf(exp_f(100.0f))) { std::printf("FAIL exp_f(100) not inf\n"); ++failures; }

  // exp2_decay_f (the CPU scans' decays, x = delta * A * log2 e <= 0): relative error over the
  // whole range where 2^x is a normal float, every float of [-1, 0] (where the decays of long
  // memories live) and the exact values at integers; 0 from the clamp down, 1 at 0.
  worst = 0;
  for (int i = 0; i <= 800000; ++i) {
    float x = -126.0f * (float)i / 800000.0f;
    double want = std::exp2((double)x);
    double rel = std::fabs(exp2_decay_f(x) - want) / want;
    if (rel > worst) worst = rel;
  }
  for (uint32_t bits = 0x80000001u; bits <= 0xbf800000u; bits += 97) {  // every 97th float of [-1, 0)
    const float x = bits_to_float((int32_t)bits);
    double want = std::exp2((double)x);
    double rel = std::fabs(exp2_decay_f(x) - want) / want;
    if (rel > worst) worst = rel;
  }
  if (worst > 2e-7) { std::printf("FAIL exp2_decay_f worst relative error %.3g\n", worst); ++failures; }
  std::printf("exp2_decay_f: max relative error %.3g on [-126, 0]\n", worst);
  for (int k = -126; k <= 0; ++k) check_rel("exp2_decay_f(integer)", exp2_decay_f((float)k), std::ldexp(1.0, k), 2e-7, 0);
  check_rel("exp2_decay_f(0)", exp2_decay_f(0.0f), 1.0, 0, 0);
  check_rel("exp2_decay_f(-0)", exp2_decay_f(-0.0f), 1.0, 0, 0);
  for (float x : {-127.0f, -127.4f, -200.0f, -1e30f, -INFINITY})
    check_rel("exp2_decay_f(below -127)", exp2_decay_f(x), 0.0, 0, 0);
  if (!std::isnan(exp2_decay_f(NAN))) { std::printf("FAIL exp2_decay_f(nan) not nan\n"); ++failures; }
  // exp2_fast_f: the same below 128 (positive x too), +inf from 128 up.
  worst = 0;
  for (int i = 0; i <= 400000; ++i) {
    float x = -126.0f + 253.4f * (float)i / 400000.0f;
    double want = std::exp2((double)x);
    double rel = std::fabs(exp2_fast_f(x) - want) / want;
    if (rel > worst) worst = rel;
  }
  if (worst > 2e-7) { std::printf("FAIL exp2_fast_f worst relative error %.3g\n", worst); ++failures; }
  for (float x : {127.51f, 128.0f, 130.0f, 1e30f, INFINITY})
    if (!std::isinf(exp2_fast_f(x))) { std::printf("FAIL exp2_fast_f(%g) not inf\n", x); ++failures; }
  for (float x : {-127.0f, -1e30f, -INFINITY}) check_rel("exp2_fast_f(below -127)", exp2_fast_f(x), 0.0, 0, 0);

  // softplus_fast_f (the CPU scans' delta) against log1p(exp(x)) in double over the whole range
  // where the result is a normal float (relative error matters at the tiny end: delta scales
  // the input term), its 0 end and large x.
  worst = 0;
  for (int i = 0; i <= 400000; ++i) {
    float x = -87.0f + 174.0f * (float)i / 400000.0f;
    double want = std::log1p(std::exp((double)x));
    double rel = std::fabs(softplus_fast_f(x) - want) / want;
    if (rel > worst) worst = rel;
  }
  for (uint32_t bits = 0x00000001u; bits <= 0x3f800000u; bits += 97) {  // every 97th float of (0, 1], and -x
    const float x = (bits & 1) ? bits_to_float((int32_t)bits) : -bits_to_float((int32_t)bits);
    double want = std::log1p(std::exp((double)x));
    double rel = std::fabs(softplus_fast_f(x) - want) / want;
    if (rel > worst) worst = rel;
  }
  if (worst > 5e-7) { std::printf("FAIL softplus_fast_f worst relative error %.3g\n", worst); ++failures; }
  std::printf("softplus_fast_f: max relative error %.3g on [-87, 87]\n", worst);
  check_rel("softplus_fast_f(0)", softplus_fast_f(0.0f), std::log(2.0), 3e-7, 0);
  for (float x : {-87.7f, -90.0f, -1e30f, -INFINITY}) check_rel("softplus_fast_f(very negative)", softplus_fast_f(x), 0.0, 0, 0);
  for (float x : {30.0f, 100.0f, 1e30f}) check_rel("softplus_fast_f(large)", softplus_fast_f(x), x, 0, 0);
  if (!std::isinf(softplus_fast_f(INFINITY))) { std::printf("FAIL softplus_fast_f(inf) not inf\n"); ++failures; }
  if (!std::isnan(softplus_fast_f(NAN))) { std::printf("FAIL softplus_fast_f(nan) not nan\n"); ++failures; }

  // softplus against log1p(exp(x)) in double, torch's threshold-20 convention included.
  worst = 0;
  for (int i = 0; i <= 100000; ++i) {
    float x = -30.0f + 60.0f * (float)i / 100000.0f;
    double want = x > 20 ? (double)x : std::log1p(std::exp((double)x));
    double rel = std::fabs(softplus_f(x) - want) / std::fabs(want);
    if (rel > worst) worst = rel;
  }
  if (worst > 5e-7) { std::printf("FAIL softplus_f worst relative error %.3g\n", worst); ++failures; }
  check_rel("softplus(25)", softplus_f(25.0f), 25.0, 0, 0);

  for (float x : {-9.0f, -1.5f, -1e-3f, 0.0f, 0.7f, 4.0f}) {
    double s = 1.0 / (1.0 + std::exp(-(double)x));
    check_rel("sigmoid", sigmoid_f(x), s, 1e-6, 1e-7);
    check_rel("silu", silu_f(x), x * s, 1e-6, 1e-7);
    double h = 1e-4;
    double num = ((x + h) / (1 + std::exp(-(x + h))) - (x - h) / (1 + std::exp(-(x - h)))) / (2 * h);
    check_rel("silu_grad", silu_grad_f(x), num, 1e-5, 1e-6);
  }

  // Direction maps: each is a permutation; k=1 is column-major; k=2,3 reverse k=0,1.
  const int P = 7, Q = 9, L = P * Q;
  for (int k = 0; k < 4; ++k) {
    int seen[L] = {0};
    for (int l = 0; l < L; ++l) {
      long long pos = direction_position(k, l, P, Q);
      if (pos < 0 || pos >= L) { std::printf("FAIL map out of range\n"); return 1; }
      seen[pos]++;
    }
    for (int i = 0; i < L; ++i)
      if (seen[i] != 1) { std::printf("FAIL direction %d is not a permutation\n", k); ++failures; break; }
  }
  for (int l = 0; l < L; ++l) {
    int p = l % P, q = l / P;
    if (direction_position(1, l, P, Q) != p * Q + q) { std::printf("FAIL column-major map\n"); ++failures; break; }
    if (direction_position(2, l, P, Q) != L - 1 - l) { std::printf("FAIL reversed map\n"); ++failures; break; }
    if (direction_position(3, l, P, Q) != direction_position(1, L - 1 - l, P, Q)) { std::printf("FAIL k3 map\n"); ++failures; break; }
  }

  // combine() is associative and matches sequential application.
  AffinePair a{0.9f, 0.3f}, b{0.5f, -1.25f}, c{1.1f, 2.0f};
  AffinePair l1 = combine(combine(a, b), c), l2 = combine(a, combine(b, c));
  check_rel("combine assoc a", l1.a, l2.a, 1e-6, 0);
  check_rel("combine assoc b", l1.b, l2.b, 1e-6, 1e-7);
  float h = 0.4f;
  float seq = c.a * (b.a * (a.a * h + a.b) + b.b) + c.b;
  check_rel("combine sequential", l1.a * h + l1.b, seq, 1e-6, 1e-6);

  if (failures) { std::printf("%d failures\n", failures); return 1; }
  std::printf("scan_math: all checks passed\n");
  return 0;
}
