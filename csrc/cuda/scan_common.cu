// Planning of the scan kernels' work decomposition, and the two small kernels both scan
// directions share: the carry pass over segment summaries and the fixed-order reduction of
// partial results.  See README.md for the design.
#include "cuda/scan_common.cuh"

namespace hands3c {
namespace cuda {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Budget (floats) of the backward's per-position reduction buffer.
constexpr int kRedBudget = 4096;

}  // namespace

ScanPlan plan_scan(const ScanProblem& pb, int64_t target_threads) {
  ScanPlan pl;
  const int64_t N = pb.N;
  pl.nmax = N <= 1 ? 1 : N <= 4 ? 4 : N <= 8 ? 8 : N <= 16 ? 16 : 64;
  pl.cpg = pb.D / pb.G;
  // Two warps per block when there are enough channels and the state is small; one warp
  // otherwise (the backward's shared memory grows with nmax * TD).
  pl.TD = (pl.cpg >= 64 && pl.nmax <= 16) ? 64 : 32;
  pl.tpg = ceil_div(pl.cpg, pl.TD);
  pl.dtiles = pb.G * pl.tpg;
  pl.nchunks = ceil_div(pb.L, kCheckpointStride);
  const int64_t target_blocks = std::max<int64_t>(1, ceil_div(target_threads, pl.TD));
  const int64_t base = pb.batch * pl.dtiles;
  // Enough (batch, tile) blocks: each block walks all directions and sums them in place.
  // Otherwise one direction per block (partial outputs summed afterwards), and if that is
  // still too few, the sequence is cut into segments: the chunked scan with a carry pass.
  pl.ks = (pb.K > 1 && base < target_blocks) ? pb.K : 1;
  const int64_t items = base * pl.ks;
  int64_t nseg = 1;
  if (items < target_blocks) nseg = std::min<int64_t>(pl.nchunks, ceil_div(target_blocks, items));
  pl.cps = ceil_div(pl.nchunks, nseg);
  pl.nseg = ceil_div(pl.nchunks, pl.cps);
  pl.grid = pb.batch * pl.ks * pl.nseg * pl.dtiles;

  const int TD = pl.TD, TDP = TD + 1;
  const int R = pb.cross ? (int)pb.R : 0;
  const bool has_z = !pb.cross && pb.z.p != nullptr;
  pl.TS = kFwdTile;
  pl.TB = kBwdTile;
  pl.nc = R + 2 * pl.nmax;
  pl.ncr = R + 2 * (int)N;
  pl.F = (int)std::max<int64_t>(1, std::min<int64_t>(pl.TB, kRedBudget / ((int64_t)pl.ncr * TDP)));

  int off = 0;
  auto take = [&](int floats) {
    const int o = off;
    off += (floats + 3) & ~3;  // 16-byte aligned regions
    return o;
  };
  pl.f_pos = take(pl.TS);
  pl.f_u = take(pl.TS * TDP);
  pl.f_dl = pb.cross ? 0 : take(pl.TS * TDP);
  pl.f_z = has_z ? take(pl.TS * TDP) : 0;
  pl.f_bc = take(pl.TS * pl.nc);
  pl.f_w = take(R * TD);
  pl.f_total = off;

  off = 0;
  pl.b_pos = take(pl.TB);
  pl.b_u = take(pl.TB * TDP);
  pl.b_dl = pb.cross ? 0 : take(pl.TB * TDP);
  pl.b_z = has_z ? take(pl.TB * TDP) : 0;
  pl.b_do = take(pl.TB * TDP);
  pl.b_y = has_z ? take(pl.TB * TDP) : 0;
  pl.b_bc = take(pl.TB * pl.nc);
  pl.b_w = take(R * TD);
  pl.b_dw = take(R * TD);
  pl.b_hist = take(pl.TB * pl.nmax * TD);
  pl.b_red = take(pl.F * pl.ncr * TDP);
  pl.b_total = off;
  return pl;
}

size_t scan_fwd_smem_bytes(const ScanPlan& pl) { return (size_t)pl.f_total * sizeof(float); }
size_t scan_bwd_smem_bytes(const ScanPlan& pl) { return (size_t)pl.b_total * sizeof(float); }

int64_t scan_fwd_workspace(const ScanProblem& pb, const ScanPlan& pl) {
  int64_t n = 0;
  if (pl.nseg > 1) n += 2 * pb.batch * pb.K * pl.nseg * pb.D * pb.N;  // segment summaries
  if (pl.ks > 1) n += (pb.K - 1) * pb.batch * pb.D * pb.L;          // directions 1..K-1
  return n;
}

int64_t scan_bwd_workspace(const ScanProblem& pb, const ScanPlan& pl) {
  int64_t n = 0;
  if (pl.nseg > 1) n += 2 * pb.batch * pb.K * pl.nseg * pb.D * pb.N;
  if (pl.ks > 1) n += (pb.K - 1) * pb.batch * pb.D * pb.L;
  if (pb.cross) {
    if (pl.dtiles > 1) n += pl.dtiles * pb.batch * pb.L * pb.K * pl.ncr;
  } else {
    n += 2 * pl.tpg * pb.batch * pb.G * pb.N * pb.L;
  }
  const int64_t parts = pb.batch * pl.nseg * pb.K * pb.D;
  n += parts * (pb.N + 2 + (pb.cross ? pb.R : 0));
  return n;
}

// ---- carry pass ---------------------------------------------------------------------------
// seg_a/seg_b hold, per (row = batch*K + k, segment, d, n), the affine map h -> a h + b of a
// whole segment.  The pass replaces seg_b by the state entering each segment: forward from
// h = 0 over segments 0..nseg-1, or (reverse, for the backward's adjoint) from `init` (the
// gradient of the final state, or 0) over segments nseg-1..0.  Sequential over segments, one
// thread per (row, d, n): there are few segments (the planner targets one block per SM slot).

__global__ void carry_kernel(float* __restrict__ seg_a, float* __restrict__ seg_b, int64_t rows, int64_t nseg,
                             int64_t DN, const float* __restrict__ init, int reverse) {
  const int64_t total = rows * DN;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = idx / DN, e = idx - row * DN;
    const int64_t base = row * nseg * DN + e;
    hm::AffinePair acc{1.f, init != nullptr ? init[idx] : 0.f};
    for (int64_t i = 0; i < nseg; ++i) {
      const int64_t s = reverse ? nseg - 1 - i : i;
      const int64_t at = base + s * DN;
      const hm::AffinePair seg{seg_a[at], seg_b[at]};
      seg_b[at] = acc.b;  // the state (or adjoint) entering segment s
      acc = hm::combine(acc, seg);
    }
  }
}

// out[i] = (init ? out[i] : 0) + parts[0][i] + parts[1][i] + ... in this order: the
// deterministic replacement of atomics for every cross-block sum.
__global__ void reduce_parts_kernel(const float* __restrict__ parts, int64_t nparts, int64_t n, void* out,
                                    int out_dtype, int init_from_out) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float acc = init_from_out ? static_cast<const float*>(out)[i] : 0.f;
    for (int64_t p = 0; p < nparts; ++p) acc += parts[p * n + i];
    store_f(out, out_dtype, i, acc);
  }
}

namespace {
unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = ceil_div(n, threads);
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 16));
}
}  // namespace

LaunchStatus launch_carry(float* seg_a, float* seg_b, int64_t rows, int64_t nseg, int64_t DN, const float* init,
                          bool reverse, void* stream) {
  const int64_t total = rows * DN;
  if (total == 0) return {};
  HS3C_LAUNCH(carry_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream, seg_a, seg_b, rows, nseg, DN, init,
              reverse ? 1 : 0);
  HS3C_CHECK_LAUNCH("hands3c::carry_kernel");
  return {};
}

LaunchStatus launch_reduce(const float* parts, int64_t nparts, int64_t n, void* out, int out_dtype,
                           bool init_from_out, void* stream) {
  if (n == 0) return {};
  HS3C_LAUNCH(reduce_parts_kernel, dim3(grid_for(n, 256)), dim3(256), 0, stream, parts, nparts, n, out, out_dtype,
              init_from_out ? 1 : 0);
  HS3C_CHECK_LAUNCH("hands3c::reduce_parts_kernel");
  return {};
}

int device_sm_count(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || v < 1) {
    (void)cudaGetLastError();  // clear the sticky-free error state of the failed query
    v = 108;
  }
  return v;
}

size_t device_max_smem_optin(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess || v < 1) {
    (void)cudaGetLastError();
    v = 48 * 1024;
  }
  return (size_t)v;
}

}  // namespace cuda
}  // namespace hands3c
