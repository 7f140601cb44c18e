// Argument blocks of the cross-scan CPU kernels and the per-ISA entry points
// (cross_scan_isa_*.cpp), shared with the dispatcher in cross_scan_cpu.cpp.  Named like the
// selective scan's (selective_scan_dispatch.h): xs::forward_<isa>, xs::backward_<isa>.
#pragma once

#include <cstdint>

namespace hands3c {
namespace cpu {
namespace xs {

struct CrossScanArgs {
  int64_t B, D, P, Q, L, R, N, C;     // C = R + 2N
  const float* u; int64_t u_sb, u_sd, u_sl;   // u[b, d, l] at u + b*u_sb + d*u_sd + l*u_sl
  const float* dbl;                   // (B, 4, L, C): projections in each direction's scan order
  const float* dt_w;                  // (4, D, R) contiguous
  const float* dt_b;                  // (4, D)
  const float* a_logs;                // (4D, N)
  const float* ds;                    // (4D)
  // y[b, d, p, q] at out + b*y_sb + d*y_sd + p*y_sp + q*y_sq (the forward's output layout)
  int64_t y_sb = 0, y_sd = 0, y_sp = 0, y_sq = 0;
};

struct CrossScanGrads {
  const float* dout;     // dout[b, d, p, q] at dout + b*dout_sb + d*dout_sd + p*dout_sp + q*dout_sq
  int64_t dout_sb, dout_sd, dout_sp, dout_sq;
  const float* ckpt;     // (B, 4, D, nchunks, N)
  float* du;             // (B, D, L) contiguous, written (the projection term is added later)
  float* ddbl_part;      // (ngroups, B, 4, L, C): per channel-group partial of d(dbl), scan order
  float* dw_part;        // (B, 4, D, R)
  float* db_part;        // (B, 4, D)
  float* dalog_part;     // (B, 4D, N): gradient w.r.t. A (not yet times A)
  float* dds_part;       // (B, 4D)
  int64_t ngroups, blocks_per_group;
};

void forward_avx512(const CrossScanArgs& s, float* out, float* ckpt);
void forward_avx2(const CrossScanArgs& s, float* out, float* ckpt);
void forward_baseline(const CrossScanArgs& s, float* out, float* ckpt);
void backward_avx512(const CrossScanArgs& s, const CrossScanGrads& g);
void backward_avx2(const CrossScanArgs& s, const CrossScanGrads& g);
void backward_baseline(const CrossScanArgs& s, const CrossScanGrads& g);
double state_update_peak_avx512(int64_t steps);
double state_update_peak_avx2(int64_t steps);
double state_update_peak_baseline(int64_t steps);
double fma_peak_avx512(int64_t steps);
double fma_peak_avx2(int64_t steps);
double fma_peak_baseline(int64_t steps);
double backward_update_peak_avx512(int64_t steps);
double backward_update_peak_avx2(int64_t steps);
double backward_update_peak_baseline(int64_t steps);
int ops_per_update_avx512();
int ops_per_update_avx2();
int ops_per_update_baseline();

}  // namespace xs
}  // namespace cpu
}  // namespace hands3c
