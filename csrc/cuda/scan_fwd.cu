// Forward scan kernel shared by hands3c::selective_scan_fwd (K = 1) and
// hands3c::cross_scan_fwd (K = 4 traversal directions of a plane), and its launcher.
//
// One thread = one channel of one (batch, direction, segment); a block = TD consecutive
// channels of one group.  Each thread walks its steps sequentially with all NMAX states in
// registers; the block stages TS steps at a time of u / delta / z (coalesced through shared
// memory) and of the per-position vectors B, C, dt_low (shared by all its channels).
// Checkpoints (the state entering every 64-step chunk) are written on the way; they are the
// backward's recomputation points.
#include "cuda/scan_common.cuh"

namespace hands3c {
namespace cuda {

// summary == 1: the first pass of the chunked scan.  Each block scans its segment from a
// zero state and stores the segment's affine map (product of decays, end state) for the
// carry pass; nothing else is written.  summary == 0: the main pass, starting from the
// carried state (seg_b after the carry pass) when the sequence is segmented.
template <int NMAX>
__global__ void __launch_bounds__(64) scan_fwd_kernel(ScanProblem pb, ScanPlan pl, ScanFwdIO io, float* seg_a,
                                                      float* seg_b, float* ypart, int summary) {
  HS3C_DYN_SMEM(smem);
  const int TD = pl.TD, TDP = TD + 1, t = (int)threadIdx.x;
  const BlockCoords bc = block_coords(pl);
  if (summary && bc.seg == pl.nseg - 1) return;  // nothing follows the last segment (block-uniform exit)
  const Tile tl = tile_of(pl, bc.tile);
  const bool valid = t < tl.n_valid;
  const int64_t d = tl.d_first + (valid ? t : 0);
  const int N = (int)pb.N, R = pb.cross ? (int)pb.R : 0, nc = pl.nc;
  const int64_t D = pb.D, L = pb.L, K = pb.K, b = bc.b;
  int* s_pos = reinterpret_cast<int*>(smem + pl.f_pos);
  float* s_u = smem + pl.f_u;
  float* s_dl = smem + pl.f_dl;
  float* s_z = smem + pl.f_z;
  float* s_bc = smem + pl.f_bc;
  float* s_w = smem + pl.f_w;
  const bool has_z = !summary && !pb.cross && pb.z.p != nullptr;
  const int64_t l_begin = bc.seg * pl.cps * kCheckpointStride;
  const int64_t l_end = l_begin + pl.cps * kCheckpointStride < L ? l_begin + pl.cps * kCheckpointStride : L;
  const int k0 = (int)(pl.ks > 1 ? bc.kk : 0), k1 = (int)(pl.ks > 1 ? bc.kk + 1 : K);

  for (int k = k0; k < k1; ++k) {
    const int64_t kd = k * D + d;
    float A[NMAX], h[NMAX], prod[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
      // Padded states get a harmless finite A; their B and C are 0 so they stay 0.
      A[n] = (valid && n < N) ? pb.A[kd * N + n] : -1.f;
      h[n] = 0.f;
      prod[n] = 1.f;
    }
    const int64_t sidx = (((b * K + k) * pl.nseg + bc.seg) * D + d) * N;
    if (!summary && pl.nseg > 1 && valid) {
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) h[n] = seg_b[sidx + n];
    }
    const float bias = (valid && pb.delta_bias) ? pb.delta_bias[kd] : 0.f;
    const float dskip = (valid && pb.Dskip) ? pb.Dskip[kd] : 0.f;
    // This thread's column of dt_projs_weight[k]: read only by this thread, so no barrier.
    for (int r = 0; r < R; ++r) s_w[r * TD + t] = valid ? pb.w[kd * R + r] : 0.f;

    // Where this direction's outputs go: a block that walks all directions adds them into
    // `out` in the order k = 0..K-1; with one direction per block, k > 0 goes to its own
    // partial buffer and the launcher sums them into `out` in the same order.
    void* dst = io.out;
    int dst_dtype = io.out_dtype;
    bool accumulate = pl.ks == 1 && k > 0;
    if (pl.ks > 1 && k > 0) {
      dst = ypart + (k - 1) * pb.batch * D * L;
      dst_dtype = kFloat32;
    }

    for (int64_t l0 = l_begin; l0 < l_end; l0 += pl.TS) {
      const int nj = (int)(l_end - l0 < pl.TS ? l_end - l0 : pl.TS);
      __syncthreads();  // the previous tile's readers are done with shared memory
      stage_positions(s_pos, pb, k, l0, nj, TD);
      __syncthreads();
      stage_tile(s_u, pb.u, b, tl, s_pos, nj, TD);
      if (!pb.cross) stage_tile(s_dl, pb.delta, b, tl, s_pos, nj, TD);
      if (has_z) stage_tile(s_z, pb.z, b, tl, s_pos, nj, TD);
      stage_vectors<NMAX>(s_bc, pb, b, k, tl.g, s_pos, nj, nc, TD);
      __syncthreads();

      for (int j = 0; j < nj; ++j) {
        const int64_t l = l0 + j;
        if (!summary && valid && (l % kCheckpointStride) == 0) {
          float* cp = io.ckpt + (((b * K + k) * D + d) * pl.nchunks + l / kCheckpointStride) * N;
#pragma unroll
          for (int n = 0; n < NMAX; ++n)
            if (n < N) cp[n] = h[n];
        }
        const float* bcj = s_bc + j * nc;
        const float x = delta_pre(pb, bias, s_dl, s_w, bcj, j, t, TD);
        const float dt = pb.softplus ? hm::softplus_f(x) : x;
        const float uu = s_u[j * TDP + t];
        const float dtu = dt * uu;
        float y = dskip * uu;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
          // h_l = exp(Δ A) h_{l-1} + Δ B u, as the combine of the running pair with this
          // step's map (the running product of decays is the segment summary).
          const hm::AffinePair p = hm::combine(hm::AffinePair{prod[n], h[n]},
                                               hm::AffinePair{hm::discrete_decay(dt, A[n]), dtu * bcj[R + n]});
          prod[n] = p.a;
          h[n] = p.b;
          y += bcj[R + NMAX + n] * h[n];
        }
        if (!summary) {
          if (has_z) y *= hm::silu_f(s_z[j * TDP + t]);
          s_u[j * TDP + t] = y;  // in place: only this thread reads column t of step j
        }
      }
      if (!summary) {
        __syncthreads();
        store_tile(s_u, dst, dst_dtype, D, L, b, tl, s_pos, nj, TD, accumulate);
      }
    }

    if (valid) {
      if (summary) {
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
          if (n < N) {
            seg_a[sidx + n] = prod[n];
            seg_b[sidx + n] = h[n];
          }
      } else if (io.last_state != nullptr && bc.seg == pl.nseg - 1) {
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
          if (n < N) io.last_state[(b * D + d) * N + n] = h[n];
      }
    }
  }
}

namespace {

template <int NMAX>
LaunchStatus run_forward(const ScanProblem& pb, const ScanPlan& pl, const ScanFwdIO& io, float* ws, void* stream) {
  float* seg_a = nullptr;
  float* seg_b = nullptr;
  float* ypart = nullptr;
  if (pl.nseg > 1) {
    const int64_t n = pb.batch * pb.K * pl.nseg * pb.D * pb.N;
    seg_a = ws;
    seg_b = ws + n;
    ws += 2 * n;
  }
  if (pl.ks > 1) ypart = ws;
  const size_t smem = scan_fwd_smem_bytes(pl);
  if (smem > 48 * 1024) {
    cudaFuncSetAttribute(scan_fwd_kernel<NMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    HS3C_CHECK_LAUNCH("hands3c::scan_fwd_kernel (shared memory attribute)");
  }
  const dim3 grid((unsigned)pl.grid), block((unsigned)pl.TD);
  if (pl.nseg > 1) {
    HS3C_LAUNCH(scan_fwd_kernel<NMAX>, grid, block, smem, stream, pb, pl, io, seg_a, seg_b, ypart, 1);
    HS3C_CHECK_LAUNCH("hands3c::scan_fwd_kernel (segment summaries)");
    const LaunchStatus st = launch_carry(seg_a, seg_b, pb.batch * pb.K, pl.nseg, pb.D * pb.N, nullptr, false, stream);
    if (st.error) return st;
  }
  HS3C_LAUNCH(scan_fwd_kernel<NMAX>, grid, block, smem, stream, pb, pl, io, seg_a, seg_b, ypart, 0);
  HS3C_CHECK_LAUNCH("hands3c::scan_fwd_kernel");
  if (pl.ks > 1) return launch_reduce(ypart, pb.K - 1, pb.batch * pb.D * pb.L, io.out, io.out_dtype, true, stream);
  return {};
}

}  // namespace

LaunchStatus scan_forward(const ScanProblem& pb, const ScanPlan& pl, const ScanFwdIO& io, float* workspace,
                          void* stream) {
  switch (pl.nmax) {
    case 1: return run_forward<1>(pb, pl, io, workspace, stream);
    case 4: return run_forward<4>(pb, pl, io, workspace, stream);
    case 8: return run_forward<8>(pb, pl, io, workspace, stream);
    case 16: return run_forward<16>(pb, pl, io, workspace, stream);
    default: return run_forward<64>(pb, pl, io, workspace, stream);
  }
}

}  // namespace cuda
}  // namespace hands3c
