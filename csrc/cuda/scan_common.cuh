// Device helpers shared by the forward and backward scan kernels (scan_fwd.cu, scan_bwd.cu):
// block coordinates, channel tiles, and the cooperative shared-memory staging of inputs and
// outputs.  See README.md for the work decomposition.
#pragma once

#include <algorithm>

#include "cuda/compat.cuh"

// After every launch: return the launch error, naming the kernel, to the binding (which
// raises it as a TORCH_CHECK error).
#define HS3C_CHECK_LAUNCH(name)                                                   \
  do {                                                                            \
    const cudaError_t hs3c_err_ = cudaGetLastError();                             \
    if (hs3c_err_ != cudaSuccess)                                                 \
      return ::hands3c::cuda::LaunchStatus{(int)hs3c_err_, name, cudaGetErrorString(hs3c_err_)}; \
  } while (0)

namespace hands3c {
namespace cuda {

// Forward steps staged per tile, and backward steps per recomputed sub-tile.  The backward
// keeps the state before every step of a sub-tile in shared memory (TB * nmax * TD floats),
// which is what bounds TB; the states at its sub-tile starts live in a per-thread array of
// 64 / TB entries.
constexpr int kFwdTile = 32;
constexpr int kBwdTile = 8;
constexpr int kBwdSubTiles = (int)(kCheckpointStride / kBwdTile);

// Host launchers of the shared small kernels (scan_common.cu).
LaunchStatus launch_carry(float* seg_a, float* seg_b, int64_t rows, int64_t nseg, int64_t DN, const float* init,
                          bool reverse, void* stream);
LaunchStatus launch_reduce(const float* parts, int64_t nparts, int64_t n, void* out, int out_dtype,
                           bool init_from_out, void* stream);

namespace hm = hands3c::math;

// Block -> (batch, direction slot, segment, channel tile); the tile index varies fastest so
// that neighbouring blocks share the per-position vectors (B, C, dt_low) in L2.
struct BlockCoords {
  int64_t b, kk, seg, tile;
};

HS3C_DEV BlockCoords block_coords(const ScanPlan& pl) {
  int64_t r = (int64_t)blockIdx.x;
  BlockCoords c;
  c.tile = r % pl.dtiles;
  r /= pl.dtiles;
  c.seg = r % pl.nseg;
  r /= pl.nseg;
  c.kk = r % pl.ks;
  c.b = r / pl.ks;
  return c;
}

// A tile is TD consecutive channels inside one group (tiles never straddle groups, so a block
// shares one B/C sequence); `valid` channels are the first n_valid threads.
struct Tile {
  int64_t g;        // group
  int64_t ti;       // tile index inside the group
  int64_t d_first;  // first channel
  int n_valid;
};

HS3C_DEV Tile tile_of(const ScanPlan& pl, int64_t tile) {
  Tile t;
  t.g = tile / pl.tpg;
  t.ti = tile - t.g * pl.tpg;
  const int64_t c0 = t.ti * pl.TD;
  const int64_t left = pl.cpg - c0;
  t.n_valid = (int)(left < pl.TD ? left : pl.TD);
  t.d_first = t.g * pl.cpg + c0;
  return t;
}

// Plane position visited at step l of direction k (identity for the selective scan).
HS3C_DEV int step_position(const ScanProblem& pb, int k, int64_t l) {
  return pb.cross ? (int)hm::direction_position(k, l, pb.P, pb.Q) : (int)l;
}

// s_pos[j] = position of step l0 + j, for j < nj.
HS3C_DEV void stage_positions(int* s_pos, const ScanProblem& pb, int k, int64_t l0, int nj, int TD) {
  for (int j = (int)threadIdx.x; j < nj; j += TD) s_pos[j] = step_position(pb, k, l0 + j);
}

// tile[j * (TD+1) + t] = v(b, d_first + t, s_pos[j]) (0 for t >= n_valid).  The loop order
// follows the tensor's contiguous dimension so that a warp reads consecutive addresses: channels
// when they are contiguous (the channel branch's permuted view), steps otherwise.  The +1
// padding keeps both orders free of bank conflicts.
HS3C_DEV void stage_tile(float* tile, const View3& v, int64_t b, const Tile& tl, const int* s_pos, int nj, int TD) {
  const int TDP = TD + 1;
  const bool chan_fast = v.sd == 1 && v.sl != 1;
  const int total = nj * TD;
  const int64_t base = b * v.sb + tl.d_first * v.sd;
  for (int i = (int)threadIdx.x; i < total; i += TD) {
    int t, j;
    if (chan_fast) {
      t = i % TD;
      j = i / TD;
    } else {
      j = i % nj;
      t = i / nj;
    }
    float x = 0.f;
    if (t < tl.n_valid) x = load_f(v.p, v.dtype, base + (int64_t)t * v.sd + (int64_t)s_pos[j] * v.sl);
    tile[j * TDP + t] = x;
  }
}

// The reverse of stage_tile into a contiguous (batch, D, L) output: dst(b, d, pos) = tile, or
// += tile when `accumulate` (float32 outputs only).  Accumulation is the fixed-order sum over
// directions: one block owns its channels' whole rows, and its stores of direction k are
// separated from those of k + 1 by __syncthreads (which orders global memory in a block).
HS3C_DEV void store_tile(const float* tile, void* dst, int dtype, int64_t D, int64_t L, int64_t b, const Tile& tl,
                         const int* s_pos, int nj, int TD, bool accumulate) {
  const int TDP = TD + 1;
  const int total = nj * TD;
  const int64_t base = (b * D + tl.d_first) * L;
  for (int i = (int)threadIdx.x; i < total; i += TD) {
    const int j = i % nj, t = i / nj;
    if (t >= tl.n_valid) continue;
    const int64_t idx = base + (int64_t)t * L + s_pos[j];
    float x = tile[j * TDP + t];
    if (accumulate) x = static_cast<float*>(dst)[idx] + x;
    store_f(dst, dtype, idx, x);
  }
}

HS3C_DEV float load_vec(const VecView& v, int64_t b, int k, int64_t g, int64_t i, int pos) {
  return load_f(v.p, v.dtype, b * v.sb + k * v.sk + (g / v.gdiv) * v.sg + i * v.si + (int64_t)pos * v.sl);
}

// s_bc[j * nc + c] for the nj staged steps: c < R the cross scan's dt_low, then B padded to
// NMAX states, then C padded to NMAX states (padding is 0: padded states stay 0 and add nothing).
template <int NMAX>
HS3C_DEV void stage_vectors(float* s_bc, const ScanProblem& pb, int64_t b, int k, int64_t g, const int* s_pos, int nj,
                            int nc, int TD) {
  const int R = pb.cross ? (int)pb.R : 0;
  const int N = (int)pb.N;
  const int total = nj * nc;
  for (int i = (int)threadIdx.x; i < total; i += TD) {
    const int c = i % nc, j = i / nc;
    const int pos = s_pos[j];
    float x = 0.f;
    if (c < R) {
      x = load_vec(pb.dtl, b, k, g, c, pos);
    } else if (c < R + NMAX) {
      const int n = c - R;
      if (n < N) x = load_vec(pb.Bv, b, k, g, n, pos);
    } else {
      const int n = c - R - NMAX;
      if (n < N) x = load_vec(pb.Cv, b, k, g, n, pos);
    }
    s_bc[i] = x;
  }
}

// Pre-activation delta of channel t at staged step j: delta (+ bias), or for the cross scan
// bias + sum_r dt_projs_weight[k, d, r] * dt_low[r] (Δ is never materialised in memory).
HS3C_DEV float delta_pre(const ScanProblem& pb, float bias, const float* s_dl, const float* s_w, const float* bcj, int j,
                         int t, int TD) {
  float x = bias;
  if (pb.cross) {
    const int R = (int)pb.R;
    for (int r = 0; r < R; ++r) x += s_w[r * TD + t] * bcj[r];
  } else {
    x += s_dl[j * (TD + 1) + t];
  }
  return x;
}

}  // namespace cuda
}  // namespace hands3c
