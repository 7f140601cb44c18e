// Backward scan kernels shared by hands3c::selective_scan_bwd and hands3c::cross_scan_bwd,
// and their launcher.  Same decomposition as the forward (scan_fwd.cu): one thread per channel
// of one (batch, direction, segment), walking its steps in reverse.
//
// Per 64-step chunk (from its forward checkpoint):
//   1. forward through the chunk, keeping the state at each TB-step sub-tile start
//      (per-thread array `hs`);
//   2. for each sub-tile in reverse: forward again keeping the state before every step in
//      shared memory, then walk the sub-tile backwards carrying the adjoint dL/dh.
// Gradients that sum over channels at one position (dB, dC, and for the cross scan
// d dt_low) are reduced inside the block through shared memory in a fixed order and written
// as per-tile partials; gradients that sum over positions (dA, dD, d bias, d dt_projs_weight)
// are accumulated per thread and written as per-(batch, segment) partials.  The launcher sums
// all partials in a fixed order: the backward is deterministic and uses no atomics.
#include "cuda/scan_common.cuh"

namespace hands3c {
namespace cuda {

// First pass of the chunked backward: the affine map of each segment on the adjoint,
// adj -> exp(ΔA) (adj + dy C) composed over the segment's steps in reverse.  Needs no
// states.  Segment 0's map is never used (nothing precedes it).
template <int NMAX>
__global__ void __launch_bounds__(64) scan_bwd_summary_kernel(ScanProblem pb, ScanPlan pl, ScanBwdIO io, float* seg_a,
                                                              float* seg_b) {
  HS3C_DYN_SMEM(smem);
  const int TD = pl.TD, TDP = TD + 1, t = (int)threadIdx.x;
  const BlockCoords bc = block_coords(pl);
  if (bc.seg == 0) return;  // block-uniform exit
  const Tile tl = tile_of(pl, bc.tile);
  const bool valid = t < tl.n_valid;
  const int64_t d = tl.d_first + (valid ? t : 0);
  const int N = (int)pb.N, R = pb.cross ? (int)pb.R : 0, nc = pl.nc;
  const int64_t D = pb.D, L = pb.L, K = pb.K, b = bc.b;
  int* s_pos = reinterpret_cast<int*>(smem + pl.f_pos);
  float* s_do = smem + pl.f_u;  // the forward layout, with dout in u's place
  float* s_dl = smem + pl.f_dl;
  float* s_z = smem + pl.f_z;
  float* s_bc = smem + pl.f_bc;
  float* s_w = smem + pl.f_w;
  const bool has_z = !pb.cross && pb.z.p != nullptr;
  const int64_t l_begin = bc.seg * pl.cps * kCheckpointStride;
  const int64_t l_end = l_begin + pl.cps * kCheckpointStride < L ? l_begin + pl.cps * kCheckpointStride : L;
  const int k0 = (int)(pl.ks > 1 ? bc.kk : 0), k1 = (int)(pl.ks > 1 ? bc.kk + 1 : K);

  for (int k = k0; k < k1; ++k) {
    const int64_t kd = k * D + d;
    float A[NMAX], pa[NMAX], pbv[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
      A[n] = (valid && n < N) ? pb.A[kd * N + n] : -1.f;
      pa[n] = 1.f;
      pbv[n] = 0.f;
    }
    const float bias = (valid && pb.delta_bias) ? pb.delta_bias[kd] : 0.f;
    for (int r = 0; r < R; ++r) s_w[r * TD + t] = valid ? pb.w[kd * R + r] : 0.f;

    for (int64_t l_hi = l_end; l_hi > l_begin;) {
      const int64_t l0 = l_hi - pl.TS > l_begin ? l_hi - pl.TS : l_begin;
      const int nj = (int)(l_hi - l0);
      __syncthreads();
      stage_positions(s_pos, pb, k, l0, nj, TD);
      __syncthreads();
      stage_tile(s_do, io.dout, b, tl, s_pos, nj, TD);
      if (!pb.cross) stage_tile(s_dl, pb.delta, b, tl, s_pos, nj, TD);
      if (has_z) stage_tile(s_z, pb.z, b, tl, s_pos, nj, TD);
      stage_vectors<NMAX>(s_bc, pb, b, k, tl.g, s_pos, nj, nc, TD);
      __syncthreads();
      for (int j = nj - 1; j >= 0; --j) {
        const float* bcj = s_bc + j * nc;
        const float x = delta_pre(pb, bias, s_dl, s_w, bcj, j, t, TD);
        const float dt = pb.softplus ? hm::softplus_f(x) : x;
        float dy = s_do[j * TDP + t];
        if (has_z) dy *= hm::silu_f(s_z[j * TDP + t]);
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
          const float da = hm::discrete_decay(dt, A[n]);
          const hm::AffinePair p =
              hm::combine(hm::AffinePair{pa[n], pbv[n]}, hm::AffinePair{da, da * dy * bcj[R + NMAX + n]});
          pa[n] = p.a;
          pbv[n] = p.b;
        }
      }
      l_hi = l0;
    }
    if (valid) {
      const int64_t sidx = (((b * K + k) * pl.nseg + bc.seg) * D + d) * N;
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) {
          seg_a[sidx + n] = pa[n];
          seg_b[sidx + n] = pbv[n];
        }
    }
  }
}

struct BwdBuffers {
  const float* seg_adj;  // adjoint entering each segment's last step (after the carry pass)
  float* du_part;        // directions 1..K-1 when one direction per block
  float* red;            // per-tile partials of the per-position sums
  float* pdA;            // per-(batch, segment) partials: (batch*nseg, K, D, N)
  float* pdD;            // (batch*nseg, K, D)
  float* pdb;            // (batch*nseg, K, D)
  float* pdw;            // (batch*nseg, K, D, R)
  int64_t red_n;         // floats of one tile's partial
};

// One tile's partial of the per-position sums: cross scan (batch, L, K, R+2N); selective scan
// (batch, G, N, L) for each of dB and dC.
inline int64_t red_partial_size(const ScanProblem& pb, const ScanPlan& pl) {
  return pb.cross ? pb.batch * pb.L * pb.K * pl.ncr : pb.batch * pb.G * pb.N * pb.L;
}

template <int NMAX>
__global__ void __launch_bounds__(64) scan_bwd_kernel(ScanProblem pb, ScanPlan pl, ScanBwdIO io, BwdBuffers bb) {
  HS3C_DYN_SMEM(smem);
  const int TD = pl.TD, TDP = TD + 1, t = (int)threadIdx.x;
  const BlockCoords bc = block_coords(pl);
  const Tile tl = tile_of(pl, bc.tile);
  const bool valid = t < tl.n_valid;
  const int64_t d = tl.d_first + (valid ? t : 0);
  const int N = (int)pb.N, R = pb.cross ? (int)pb.R : 0, nc = pl.nc, ncr = pl.ncr, TB = pl.TB, F = pl.F;
  const int64_t D = pb.D, L = pb.L, K = pb.K, b = bc.b;
  int* s_pos = reinterpret_cast<int*>(smem + pl.b_pos);
  float* s_u = smem + pl.b_u;
  float* s_dl = smem + pl.b_dl;  // delta, then (in place) d delta
  float* s_z = smem + pl.b_z;    // z, then (in place) dz
  float* s_do = smem + pl.b_do;  // dout, then (in place) du
  float* s_y = smem + pl.b_y;    // the ungated output (needed for dz)
  float* s_bc = smem + pl.b_bc;
  float* s_w = smem + pl.b_w;
  float* s_dw = smem + pl.b_dw;
  float* s_hist = smem + pl.b_hist;
  float* s_red = smem + pl.b_red;
  const bool has_z = !pb.cross && pb.z.p != nullptr;
  const int64_t c_first = bc.seg * pl.cps;
  const int64_t c_end = c_first + pl.cps < pl.nchunks ? c_first + pl.cps : pl.nchunks;
  const int k0 = (int)(pl.ks > 1 ? bc.kk : 0), k1 = (int)(pl.ks > 1 ? bc.kk + 1 : K);
  float hs[kBwdSubTiles * NMAX];  // states at the sub-tile starts of the current chunk

  for (int k = k0; k < k1; ++k) {
    const int64_t kd = k * D + d;
    float A[NMAX], h[NMAX], adj[NMAX], dA[NMAX];
    const int64_t sidx = (((b * K + k) * pl.nseg + bc.seg) * D + d) * N;
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
      A[n] = (valid && n < N) ? pb.A[kd * N + n] : -1.f;
      dA[n] = 0.f;
      h[n] = 0.f;
      adj[n] = 0.f;
      if (valid && n < N) {
        if (pl.nseg > 1) adj[n] = bb.seg_adj[sidx + n];
        else if (io.dlast != nullptr) adj[n] = io.dlast[(b * D + d) * N + n];
      }
    }
    const float bias = (valid && pb.delta_bias) ? pb.delta_bias[kd] : 0.f;
    const float dskip = (valid && pb.Dskip) ? pb.Dskip[kd] : 0.f;
    for (int r = 0; r < R; ++r) {
      s_w[r * TD + t] = valid ? pb.w[kd * R + r] : 0.f;
      s_dw[r * TD + t] = 0.f;
    }
    float dD_acc = 0.f, db_acc = 0.f;

    void* du_dst = io.du;
    int du_dtype = io.du_dtype;
    const bool du_acc = pl.ks == 1 && k > 0;
    if (pl.ks > 1 && k > 0) {
      du_dst = bb.du_part + (k - 1) * pb.batch * D * L;
      du_dtype = kFloat32;
    }

    auto stage = [&](int64_t ls, int nj, bool full) {
      __syncthreads();
      stage_positions(s_pos, pb, k, ls, nj, TD);
      __syncthreads();
      stage_tile(s_u, pb.u, b, tl, s_pos, nj, TD);
      if (!pb.cross) stage_tile(s_dl, pb.delta, b, tl, s_pos, nj, TD);
      stage_vectors<NMAX>(s_bc, pb, b, k, tl.g, s_pos, nj, nc, TD);
      if (full) {
        stage_tile(s_do, io.dout, b, tl, s_pos, nj, TD);
        if (has_z) stage_tile(s_z, pb.z, b, tl, s_pos, nj, TD);
      }
      __syncthreads();
    };

    // Sums over the block's channels of the per-position values of steps jtop, jtop-1, ...
    // (slots 0..nslots-1), in channel order, written to this tile's partial.
    auto flush = [&](int nslots, int jtop) {
      __syncthreads();
      const int rows = nslots * ncr;
      for (int row = t; row < rows; row += TD) {
        const float* src = s_red + row * TDP;
        float s = 0.f;
        for (int c = 0; c < tl.n_valid; ++c) s += src[c];
        const int slot = row / ncr, c = row - slot * ncr;
        const int pos = s_pos[jtop - slot];
        const int64_t red_n = bb.red_n;
        if (pb.cross) {
          bb.red[(((tl.ti * pb.batch + b) * L + pos) * K + k) * ncr + c] = s;
        } else {
          // dB (which = 0) then dC partials, each laid out (tpg, gdiv, batch, G / gdiv, N, L):
          // the launcher sums the leading tpg * gdiv parts, i.e. over all tiles of a group
          // of that tensor.
          const int which = c >= N ? 1 : 0;
          const int n = c - which * N;
          const int64_t gdiv = which ? pb.Cv.gdiv : pb.Bv.gdiv;
          const int64_t part = tl.ti * gdiv + tl.g % gdiv;
          bb.red[which * pl.tpg * red_n + (((part * pb.batch + b) * (pb.G / gdiv) + tl.g / gdiv) * N + n) * L + pos] = s;
        }
      }
      __syncthreads();
    };

    for (int64_t c = c_end - 1; c >= c_first; --c) {
      const int64_t lc0 = c * kCheckpointStride;
      const int64_t lc1 = lc0 + kCheckpointStride < L ? lc0 + kCheckpointStride : L;
      const int nsub = (int)((lc1 - lc0 + TB - 1) / TB);
      const float* cp = io.ckpt + (((b * K + k) * D + d) * pl.nchunks + c) * N;
#pragma unroll
      for (int n = 0; n < NMAX; ++n) h[n] = (valid && n < N) ? cp[n] : 0.f;

      // 1. States at the sub-tile starts.
      for (int st = 0; st < nsub; ++st) {
#pragma unroll
        for (int n = 0; n < NMAX; ++n) hs[st * NMAX + n] = h[n];
        if (st == nsub - 1) break;
        stage(lc0 + (int64_t)st * TB, TB, false);
        for (int j = 0; j < TB; ++j) {
          const float* bcj = s_bc + j * nc;
          const float x = delta_pre(pb, bias, s_dl, s_w, bcj, j, t, TD);
          const float dt = pb.softplus ? hm::softplus_f(x) : x;
          const float dtu = dt * s_u[j * TDP + t];
#pragma unroll
          for (int n = 0; n < NMAX; ++n) h[n] = hm::discrete_decay(dt, A[n]) * h[n] + dtu * bcj[R + n];
        }
      }

      // 2. Sub-tiles in reverse.
      for (int st = nsub - 1; st >= 0; --st) {
        const int64_t ls = lc0 + (int64_t)st * TB;
        const int nj = (int)(lc1 - ls < TB ? lc1 - ls : TB);
#pragma unroll
        for (int n = 0; n < NMAX; ++n) h[n] = hs[st * NMAX + n];
        stage(ls, nj, true);

        // Forward over the sub-tile, keeping the state before each step (column t of the
        // history belongs to this thread alone).
        for (int j = 0; j < nj; ++j) {
          const float* bcj = s_bc + j * nc;
          const float x = delta_pre(pb, bias, s_dl, s_w, bcj, j, t, TD);
          const float dt = pb.softplus ? hm::softplus_f(x) : x;
          const float uu = s_u[j * TDP + t];
          const float dtu = dt * uu;
          float* hj = s_hist + (j * NMAX) * TD + t;
          float y = dskip * uu;
#pragma unroll
          for (int n = 0; n < NMAX; ++n) {
            hj[n * TD] = h[n];
            h[n] = hm::discrete_decay(dt, A[n]) * h[n] + dtu * bcj[R + n];
            y += bcj[R + NMAX + n] * h[n];
          }
          if (has_z) s_y[j * TDP + t] = y;
        }

        // Backward over the sub-tile.  adj enters step j as dL/dh_j from later steps
        // (already multiplied by their decay); G = adj + dy C is the full dL/dh_j.
        int slot = 0, jtop = nj - 1;
        for (int j = nj - 1; j >= 0; --j) {
          const float* bcj = s_bc + j * nc;
          const float x = delta_pre(pb, bias, s_dl, s_w, bcj, j, t, TD);
          const float dt = pb.softplus ? hm::softplus_f(x) : x;
          const float uu = s_u[j * TDP + t];
          const float dtu = dt * uu;
          float dy = s_do[j * TDP + t];
          if (has_z) {
            const float zz = s_z[j * TDP + t];
            s_z[j * TDP + t] = dy * s_y[j * TDP + t] * hm::silu_grad_f(zz);  // dz
            dy *= hm::silu_f(zz);
          }
          float du = dskip * dy;
          float ddt = 0.f;
          dD_acc += dy * uu;
          const float* hj = s_hist + (j * NMAX) * TD + t;
          float* red = s_red + slot * ncr * TDP + t;
#pragma unroll
          for (int n = 0; n < NMAX; ++n) {
            const float hp = hj[n * TD];
            const float Bn = bcj[R + n], Cn = bcj[R + NMAX + n];
            const float da = hm::discrete_decay(dt, A[n]);
            const float hl = da * hp + dtu * Bn;
            const float G = adj[n] + dy * Cn;
            if (n < N) {
              red[(R + n) * TDP] = valid ? G * dtu : 0.f;   // dB
              red[(R + N + n) * TDP] = valid ? dy * hl : 0.f;  // dC
            }
            du += G * dt * Bn;
            ddt += G * (Bn * uu + A[n] * da * hp);
            dA[n] += G * da * hp * dt;
            adj[n] = G * da;
          }
          const float dx = pb.softplus ? ddt * hm::sigmoid_f(x) : ddt;  // d softplus = sigmoid
          db_acc += dx;
          if (pb.cross) {
            for (int r = 0; r < R; ++r) {
              red[r * TDP] = valid ? dx * s_w[r * TD + t] : 0.f;  // d dt_low
              s_dw[r * TD + t] += dx * bcj[r];
            }
          } else {
            s_dl[j * TDP + t] = dx;
          }
          s_do[j * TDP + t] = du;
          if (++slot == F || j == 0) {
            flush(slot, jtop);  // ends with a barrier: the in-place tiles are complete after j == 0
            slot = 0;
            jtop = j - 1;
          }
        }
        store_tile(s_do, du_dst, du_dtype, D, L, b, tl, s_pos, nj, TD, du_acc);
        if (!pb.cross) store_tile(s_dl, io.ddelta, io.ddelta_dtype, D, L, b, tl, s_pos, nj, TD, false);
        if (has_z) store_tile(s_z, io.dz, io.dz_dtype, D, L, b, tl, s_pos, nj, TD, false);
      }
    }

    if (valid) {
      const int64_t pidx = ((b * pl.nseg + bc.seg) * K + k) * D + d;
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) bb.pdA[pidx * N + n] = dA[n];
      bb.pdD[pidx] = dD_acc;
      bb.pdb[pidx] = db_acc;
      for (int r = 0; r < R; ++r) bb.pdw[pidx * R + r] = s_dw[r * TD + t];
    }
  }
}

namespace {

template <int NMAX>
LaunchStatus run_backward(const ScanProblem& pb, const ScanPlan& pl, const ScanBwdIO& io, float* ws, void* stream) {
  float* seg_a = nullptr;
  float* seg_b = nullptr;
  BwdBuffers bb{};
  bb.red_n = red_partial_size(pb, pl);
  const int64_t red_n = bb.red_n;
  if (pl.nseg > 1) {
    const int64_t n = pb.batch * pb.K * pl.nseg * pb.D * pb.N;
    seg_a = ws;
    seg_b = ws + n;
    ws += 2 * n;
  }
  bb.seg_adj = seg_b;
  if (pl.ks > 1) {
    bb.du_part = ws;
    ws += (pb.K - 1) * pb.batch * pb.D * pb.L;
  }

  if (pb.cross && pl.dtiles == 1) {
    bb.red = io.ddbl;  // a single tile: its partial is the result
  } else {
    bb.red = ws;
    ws += (pb.cross ? pl.dtiles : 2 * pl.tpg) * red_n;
  }
  const int64_t parts = pb.batch * pl.nseg;
  const int64_t KD = pb.K * pb.D;
  bb.pdA = ws;
  ws += parts * KD * pb.N;
  bb.pdD = ws;
  ws += parts * KD;
  bb.pdb = ws;
  ws += parts * KD;
  bb.pdw = ws;

  const dim3 grid((unsigned)pl.grid), block((unsigned)pl.TD);
  if (pl.nseg > 1) {
    const size_t smem = scan_fwd_smem_bytes(pl);
    if (smem > 48 * 1024) {
      cudaFuncSetAttribute(scan_bwd_summary_kernel<NMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      HS3C_CHECK_LAUNCH("hands3c::scan_bwd_summary_kernel (shared memory attribute)");
    }
    HS3C_LAUNCH(scan_bwd_summary_kernel<NMAX>, grid, block, smem, stream, pb, pl, io, seg_a, seg_b);
    HS3C_CHECK_LAUNCH("hands3c::scan_bwd_summary_kernel");
    const LaunchStatus st = launch_carry(seg_a, seg_b, pb.batch * pb.K, pl.nseg, pb.D * pb.N,
                                         pb.K == 1 ? io.dlast : nullptr, true, stream);
    if (st.error) return st;
  }
  const size_t smem = scan_bwd_smem_bytes(pl);
  if (smem > 48 * 1024) {
    cudaFuncSetAttribute(scan_bwd_kernel<NMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    HS3C_CHECK_LAUNCH("hands3c::scan_bwd_kernel (shared memory attribute)");
  }
  HS3C_LAUNCH(scan_bwd_kernel<NMAX>, grid, block, smem, stream, pb, pl, io, bb);
  HS3C_CHECK_LAUNCH("hands3c::scan_bwd_kernel");

  LaunchStatus st;
  if (pl.ks > 1) {
    st = launch_reduce(bb.du_part, pb.K - 1, pb.batch * pb.D * pb.L, io.du, io.du_dtype, true, stream);
    if (st.error) return st;
  }
  if (pb.cross) {
    if (pl.dtiles > 1) {
      st = launch_reduce(bb.red, pl.dtiles, red_n, io.ddbl, kFloat32, false, stream);
      if (st.error) return st;
    }
  } else {
    const int64_t gb = pb.Bv.gdiv, gc = pb.Cv.gdiv;
    st = launch_reduce(bb.red, pl.tpg * gb, red_n / gb, io.dB, io.dB_dtype, false, stream);
    if (st.error) return st;
    st = launch_reduce(bb.red + pl.tpg * red_n, pl.tpg * gc, red_n / gc, io.dC, io.dC_dtype, false, stream);
    if (st.error) return st;
  }
  st = launch_reduce(bb.pdA, parts, KD * pb.N, io.dA, kFloat32, false, stream);
  if (st.error) return st;
  if (io.dD != nullptr) {
    st = launch_reduce(bb.pdD, parts, KD, io.dD, kFloat32, false, stream);
    if (st.error) return st;
  }
  if (io.ddelta_bias != nullptr) {
    st = launch_reduce(bb.pdb, parts, KD, io.ddelta_bias, kFloat32, false, stream);
    if (st.error) return st;
  }
  if (pb.cross && pb.R > 0) return launch_reduce(bb.pdw, parts, KD * pb.R, io.dw, kFloat32, false, stream);
  return {};
}

}  // namespace

LaunchStatus scan_backward(const ScanProblem& pb, const ScanPlan& pl, const ScanBwdIO& io, float* workspace,
                           void* stream) {
  switch (pl.nmax) {
    case 1: return run_backward<1>(pb, pl, io, workspace, stream);
    case 4: return run_backward<4>(pb, pl, io, workspace, stream);
    case 8: return run_backward<8>(pb, pl, io, workspace, stream);
    case 16: return run_backward<16>(pb, pl, io, workspace, stream);
    default: return run_backward<64>(pb, pl, io, workspace, stream);
  }
}

}  // namespace cuda
}  // namespace hands3c
