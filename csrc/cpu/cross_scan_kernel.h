// The fused cross-scan selective-scan CPU kernels (forward and backward), written once and
// compiled for several instruction sets (cross_scan_isa_*.cpp include this file inside a
// namespace of their own, under a `#pragma GCC target`).  Dispatch is in cross_scan_cpu.cpp.
//
// Work decomposition.  A task owns one batch element and a block of kLanes consecutive
// channels.  Its channels are packed once into a position-major tile (L x kLanes), so every
// traversal direction reads kLanes contiguous floats per step wherever it is on the plane;
// the four directions are walked by index arithmetic (no traversal copies) and accumulated
// into one output tile in the fixed order k = 0..3 (deterministic, no atomics).  Vectorised
// across the kLanes channels: every per-step quantity is a kLanes-wide array the compiler
// keeps in SIMD registers (`HS3C_SIMD`), and delta is computed on the fly from the rank-R
// dt_low stored in the per-position projections.
//
// Memory order.  Step l of direction k visits scan index s = l (k < 2) or L-1-l (k >= 2) of
// the plane in row-major (k even) or column-major (k odd) order.  The projections arrive in
// that scan order (`dbl_scan`, (B, 4, L, R+2N)) and the task keeps its channel tile in both
// orders, so every direction streams through memory forwards or backwards with unit stride
// instead of jumping a plane row per step (the channel branch's 16384-step planes otherwise
// thrash the TLB).
//
// Requires before inclusion: <ATen/Parallel.h>, "hands3c/scan_math.h", "cpu/cross_scan_dispatch.h",
// <vector>, <cstring>, <algorithm>, <cmath>.

#ifndef HS3C_ISA_NAMESPACE
#error "define HS3C_ISA_NAMESPACE before including cross_scan_kernel.h"
#endif

namespace hands3c {
namespace cpu {
namespace HS3C_ISA_NAMESPACE {

namespace hm = hands3c::math;
using xs::CrossScanArgs;
using xs::CrossScanGrads;

constexpr int kLanes = 16;           // channels per task (one AVX-512 register of floats)
constexpr int kCkpt = 64;            // steps between stored states (the backward's chunk)

// Loads the per-direction constants of one channel block; padded lanes (d >= D) get values
// that keep their state at zero and contribute nothing (u = 0, W = 0, D = 0).
struct BlockParams {
  std::vector<float> w;    // [R][kLanes]
  float bias[kLanes];
  std::vector<float> a;    // [N][kLanes], A = -exp(A_logs)
  float dskip[kLanes];

  void load(const CrossScanArgs& s, int k, int64_t d0) {
    w.assign(s.R * kLanes, 0.f);
    a.assign(s.N * kLanes, -1.f);
    for (int j = 0; j < kLanes; ++j) {
      const int64_t d = d0 + j;
      bias[j] = 0.f;
      dskip[j] = 0.f;
      if (d >= s.D) continue;
      for (int64_t r = 0; r < s.R; ++r) w[r * kLanes + j] = s.dt_w[(k * s.D + d) * s.R + r];
      bias[j] = s.dt_b[k * s.D + d];
      for (int64_t n = 0; n < s.N; ++n) a[n * kLanes + j] = -std::exp(s.a_logs[(k * s.D + d) * s.N + n]);
      dskip[j] = s.ds[k * s.D + d];
    }
  }
};

// Calls f(tile offset, tensor offset) for channel j < nd at every position (p, q) of a plane
// whose channel j sits at j*sd + p*sp + q*sq from the channel block's base, in the order that
// walks the tensor along its smallest stride (a stride of a size-1 dimension does not count):
//   channels fastest ((B, P, Q, D) storage, the S3C spatial branch's block layout): kLanes
//     consecutive floats per position, one 64-byte line;
//   p fastest ((B, Q, D, P) storage, the channel branch's block layout): 16 x kLanes blocks,
//     each channel reading or writing a run of up to kLanes rows of one column;
//   otherwise (the default (B, D, P, Q)): channel by channel, positions in plane order.
// The tile is row-major (tile[(p*Q + q)*kLanes + j]) in every case.
template <class F>
inline void for_plane(int64_t sd, int64_t sp, int64_t sq, int64_t P, int64_t Q, int nd, F&& f) {
  constexpr int64_t kAny = INT64_MAX;
  const int64_t ed = nd > 1 ? sd : kAny, ep = P > 1 ? sp : kAny, eq = Q > 1 ? sq : kAny;
  if (ed <= ep && ed <= eq && ed != kAny) {
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t l = p * Q + q, o = p * sp + q * sq;
        for (int j = 0; j < nd; ++j) f(l * kLanes + j, o + j * sd);
      }
  } else if (ep < eq) {
    for (int64_t q = 0; q < Q; ++q)
      for (int64_t p0 = 0; p0 < P; p0 += kLanes) {
        const int64_t p1 = std::min(P, p0 + kLanes);
        for (int j = 0; j < nd; ++j)
          for (int64_t p = p0; p < p1; ++p) f((p * Q + q) * kLanes + j, j * sd + p * sp + q * sq);
      }
  } else {
    for (int j = 0; j < nd; ++j)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) f((p * Q + q) * kLanes + j, j * sd + p * sp + q * sq);
  }
}

// tile[l][j] = src[d0 + j, p, q] with l = p*Q + q (zero for padded lanes); src is the batch
// element's base, channel stride sd, plane strides sp, sq.
inline void pack_tile(const float* src, int64_t sd, int64_t sp, int64_t sq, int64_t D, int64_t P, int64_t Q,
                      int64_t d0, float* tile) {
  const int nd = (int)std::min<int64_t>(kLanes, D - d0);
  if (nd < kLanes) std::memset(tile, 0, sizeof(float) * P * Q * kLanes);
  const float* s = src + d0 * sd;
  for_plane(sd, sp, sq, P, Q, nd, [&](int64_t t, int64_t o) { tile[t] = s[o]; });
}

// dst[d0 + j, p, q] = tile[l][j] for the block's real channels, through dst's strides.
inline void unpack_tile(const float* tile, int64_t sd, int64_t sp, int64_t sq, int64_t D, int64_t P, int64_t Q,
                        int64_t d0, float* dst) {
  const int nd = (int)std::min<int64_t>(kLanes, D - d0);
  float* o = dst + d0 * sd;
  for_plane(sd, sp, sq, P, Q, nd, [&](int64_t t, int64_t off) { o[off] = tile[t]; });
}

// Row-major (P x Q) tile -> column-major (Q x P) tile, and back.
inline void rows_to_cols(const float* src, int64_t P, int64_t Q, float* dst) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t q = 0; q < Q; ++q) std::memcpy(dst + (q * P + p) * kLanes, src + (p * Q + q) * kLanes, sizeof(float) * kLanes);
}

// dst (row-major) += src (column-major).
inline void add_cols_to_rows(const float* src, int64_t P, int64_t Q, float* dst) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t q = 0; q < Q; ++q) {
      float* d = dst + (p * Q + q) * kLanes;
      const float* c = src + (q * P + p) * kLanes;
      HS3C_SIMD
      for (int j = 0; j < kLanes; ++j) d[j] += c[j];
    }
}

// Delta for kLanes channels at one position: softplus(W[k, d, :] . dt_low + bias).
inline void compute_delta(const float* row, const float* w, const float* bias, int64_t R, float* x,
                          float* delta) {
  HS3C_SIMD
  for (int j = 0; j < kLanes; ++j) x[j] = bias[j];
  for (int64_t r = 0; r < R; ++r) {
    const float t = row[r];
    const float* wr = w + r * kLanes;
    HS3C_SIMD
    for (int j = 0; j < kLanes; ++j) x[j] += wr[j] * t;
  }
  HS3C_SIMD
  for (int j = 0; j < kLanes; ++j) delta[j] = hm::softplus_f(x[j]);
}

// Per-task scratch, reused across the tasks a thread runs.
struct Scratch {
  std::vector<float> urow, ucol, yrow, ycol, grow, gcol, durow, ducol, work;
};

// Scan index of step l of direction k (position in that direction's row/column-major order).
inline int64_t scan_index(int k, int64_t l, int64_t L) { return k >= 2 ? L - 1 - l : l; }

// Forward of one (batch, channel block) task over all four directions.
//   NS: the state size when known at compile time (0: runtime N, up to kMaxState).
template <int NS>
void forward_block(const CrossScanArgs& s, int64_t b, int64_t d0, float* out_plane, float* ckpt, Scratch& w) {
  const int64_t N = NS > 0 ? NS : s.N;
  const int64_t L = s.L, R = s.R, C = s.C;
  const int64_t nchunks = (L + kCkpt - 1) / kCkpt;
  w.urow.resize(L * kLanes);
  w.ucol.resize(L * kLanes);
  w.yrow.assign(L * kLanes, 0.f);
  w.ycol.assign(L * kLanes, 0.f);
  pack_tile(s.u + b * s.u_sb, s.u_sd, s.Q * s.u_sl, s.u_sl, s.D, s.P, s.Q, d0, w.urow.data());
  rows_to_cols(w.urow.data(), s.P, s.Q, w.ucol.data());
  BlockParams bp;
  alignas(64) float h[(NS > 0 ? NS : hm::kMaxState) * kLanes];
  alignas(64) float x[kLanes], delta[kLanes], du[kLanes], y[kLanes];
  for (int k = 0; k < 4; ++k) {
    bp.load(s, k, d0);
    const float* a = bp.a.data();
    const float* utile = (k & 1) ? w.ucol.data() : w.urow.data();
    float* ytile = (k & 1) ? w.ycol.data() : w.yrow.data();
    const float* dbl_k = s.dbl + (b * 4 + k) * L * C;
    std::fill(h, h + N * kLanes, 0.f);
    for (int64_t l = 0; l < L; ++l) {
      if (l % kCkpt == 0) {
        // checkpoints[b, k, d, chunk, n]: the state before step l.
        const int64_t chunk = l / kCkpt;
        for (int j = 0; j < kLanes && d0 + j < s.D; ++j) {
          float* dst = ckpt + (((b * 4 + k) * s.D + d0 + j) * nchunks + chunk) * N;
          for (int64_t n = 0; n < N; ++n) dst[n] = h[n * kLanes + j];
        }
      }
      const int64_t si = scan_index(k, l, L);
      const float* row = dbl_k + si * C;
      compute_delta(row, bp.w.data(), bp.bias, R, x, delta);
      const float* ut = utile + si * kLanes;
      HS3C_SIMD
      for (int j = 0; j < kLanes; ++j) {
        du[j] = delta[j] * ut[j];
        y[j] = bp.dskip[j] * ut[j];
      }
      const float* Bv = row + R;
      const float* Cv = row + R + N;
      for (int64_t n = 0; n < N; ++n) {
        const float bn = Bv[n], cn = Cv[n];
        float* hn = h + n * kLanes;
        const float* an = a + n * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          hn[j] = hm::exp_fast_f(delta[j] * an[j]) * hn[j] + du[j] * bn;
          y[j] += cn * hn[j];
        }
      }
      float* yt = ytile + si * kLanes;
      HS3C_SIMD
      for (int j = 0; j < kLanes; ++j) yt[j] += y[j];
    }
  }
  add_cols_to_rows(w.ycol.data(), s.P, s.Q, w.yrow.data());
  unpack_tile(w.yrow.data(), s.y_sd, s.y_sp, s.y_sq, s.D, s.P, s.Q, d0, out_plane + b * s.y_sb);
}

void forward(const CrossScanArgs& s, float* out, float* ckpt) {
  const int64_t nblocks = (s.D + kLanes - 1) / kLanes;
  at::parallel_for(0, s.B * nblocks, 1, [&](int64_t t0, int64_t t1) {
    Scratch w;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nblocks, d0 = (t % nblocks) * kLanes;
      switch (s.N) {
        case 1: forward_block<1>(s, b, d0, out, ckpt, w); break;
        case 4: forward_block<4>(s, b, d0, out, ckpt, w); break;
        case 8: forward_block<8>(s, b, d0, out, ckpt, w); break;
        case 16: forward_block<16>(s, b, d0, out, ckpt, w); break;
        default: forward_block<0>(s, b, d0, out, ckpt, w); break;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------
// Backward: per 64-step chunk, recompute the states from the stored checkpoint, then run the
// adjoint recurrence backwards through the chunk.
// ---------------------------------------------------------------------------------------

template <int NS>
void backward_block(const CrossScanArgs& s, const CrossScanGrads& g, int64_t b, int64_t d0, float* ddbl,
                    Scratch& w) {
  const int64_t N = NS > 0 ? NS : s.N;
  const int64_t L = s.L, R = s.R, C = s.C, D = s.D;
  const int64_t nchunks = (L + kCkpt - 1) / kCkpt;
  w.urow.resize(L * kLanes);
  w.ucol.resize(L * kLanes);
  w.grow.resize(L * kLanes);
  w.gcol.resize(L * kLanes);
  w.durow.assign(L * kLanes, 0.f);
  w.ducol.assign(L * kLanes, 0.f);
  pack_tile(s.u + b * s.u_sb, s.u_sd, s.Q * s.u_sl, s.u_sl, D, s.P, s.Q, d0, w.urow.data());
  rows_to_cols(w.urow.data(), s.P, s.Q, w.ucol.data());
  pack_tile(g.dout + b * g.dout_sb, g.dout_sd, g.dout_sp, g.dout_sq, D, s.P, s.Q, d0, w.grow.data());
  rows_to_cols(w.grow.data(), s.P, s.Q, w.gcol.data());
  // Per-chunk recomputation buffers: state before each step, its decay, x and delta.
  w.work.resize(kCkpt * N * kLanes * 2 + kCkpt * kLanes * 2);
  float* hprev = w.work.data();
  float* decay = hprev + kCkpt * N * kLanes;
  float* xs = decay + kCkpt * N * kLanes;
  float* deltas = xs + kCkpt * kLanes;
  BlockParams bp;
  alignas(64) float h[(NS > 0 ? NS : hm::kMaxState) * kLanes];
  alignas(64) float adj[(NS > 0 ? NS : hm::kMaxState) * kLanes];
  alignas(64) float dA[(NS > 0 ? NS : hm::kMaxState) * kLanes];
  std::vector<float> dw(R * kLanes);
  alignas(64) float dbias[kLanes], dds[kLanes], dx[kLanes], ddelta[kLanes], duacc[kLanes];

  for (int k = 0; k < 4; ++k) {
    bp.load(s, k, d0);
    const float* a = bp.a.data();
    const float* utile = (k & 1) ? w.ucol.data() : w.urow.data();
    const float* gtile = (k & 1) ? w.gcol.data() : w.grow.data();
    float* dutile = (k & 1) ? w.ducol.data() : w.durow.data();
    const float* dbl_k = s.dbl + (b * 4 + k) * L * C;
    float* ddbl_k = ddbl + (b * 4 + k) * L * C;
    std::fill(adj, adj + N * kLanes, 0.f);
    std::fill(dA, dA + N * kLanes, 0.f);
    std::fill(dw.begin(), dw.end(), 0.f);
    std::fill(dbias, dbias + kLanes, 0.f);
    std::fill(dds, dds + kLanes, 0.f);
    for (int64_t c = nchunks - 1; c >= 0; --c) {
      const int64_t l0 = c * kCkpt, l1 = std::min(L, l0 + kCkpt);
      for (int j = 0; j < kLanes; ++j) {
        const bool live = d0 + j < D;
        const float* src = g.ckpt + (((b * 4 + k) * D + d0 + j) * nchunks + c) * N;
        for (int64_t n = 0; n < N; ++n) h[n * kLanes + j] = live ? src[n] : 0.f;
      }
      for (int64_t l = l0; l < l1; ++l) {
        const int64_t t = l - l0;
        const int64_t si = scan_index(k, l, L);
        const float* row = dbl_k + si * C;
        float* xt = xs + t * kLanes;
        float* dt = deltas + t * kLanes;
        compute_delta(row, bp.w.data(), bp.bias, R, xt, dt);
        const float* ut = utile + si * kLanes;
        const float* Bv = row + R;
        for (int64_t n = 0; n < N; ++n) {
          float* hn = h + n * kLanes;
          float* hp = hprev + (t * N + n) * kLanes;
          float* dc = decay + (t * N + n) * kLanes;
          const float* an = a + n * kLanes;
          const float bn = Bv[n];
          HS3C_SIMD
          for (int j = 0; j < kLanes; ++j) {
            const float e = hm::exp_fast_f(dt[j] * an[j]);
            hp[j] = hn[j];
            dc[j] = e;
            hn[j] = e * hn[j] + dt[j] * ut[j] * bn;
          }
        }
      }
      // adj holds dL/dh_l (the part flowing back from later steps).
      for (int64_t l = l1 - 1; l >= l0; --l) {
        const int64_t t = l - l0;
        const int64_t si = scan_index(k, l, L);
        const float* row = dbl_k + si * C;
        float* drow = ddbl_k + si * C;
        const float* ut = utile + si * kLanes;
        const float* gy = gtile + si * kLanes;
        const float* dt = deltas + t * kLanes;
        const float* xt = xs + t * kLanes;
        const float* Bv = row + R;
        const float* Cv = row + R + N;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          dds[j] += gy[j] * ut[j];
          duacc[j] = gy[j] * bp.dskip[j];
          ddelta[j] = 0.f;
        }
        for (int64_t n = 0; n < N; ++n) {
          const float bn = Bv[n], cn = Cv[n];
          float* an_adj = adj + n * kLanes;
          const float* hp = hprev + (t * N + n) * kLanes;
          const float* dc = decay + (t * N + n) * kLanes;
          const float* an = a + n * kLanes;
          float* dAn = dA + n * kLanes;
          float sc = 0.f, sb = 0.f;
          _Pragma("omp simd reduction(+:sc,sb)")
          for (int j = 0; j < kLanes; ++j) {
            const float hl = dc[j] * hp[j] + dt[j] * ut[j] * bn;
            sc += gy[j] * hl;
            const float gj = an_adj[j] + gy[j] * cn;
            sb += gj * dt[j] * ut[j];
            duacc[j] += gj * dt[j] * bn;
            const float gdh = gj * dc[j] * hp[j];
            ddelta[j] += gj * bn * ut[j] + gdh * an[j];
            dAn[j] += gdh * dt[j];
            an_adj[j] = gj * dc[j];
          }
          drow[R + n] += sb;
          drow[R + N + n] += sc;
        }
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          dx[j] = ddelta[j] * hm::sigmoid_f(xt[j]);
          dbias[j] += dx[j];
        }
        float* du_t = dutile + si * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) du_t[j] += duacc[j];
        for (int64_t r = 0; r < R; ++r) {
          const float* wr = bp.w.data() + r * kLanes;
          float* dwr = dw.data() + r * kLanes;
          const float tr = row[r];
          float sr = 0.f;
          _Pragma("omp simd reduction(+:sr)")
          for (int j = 0; j < kLanes; ++j) {
            sr += dx[j] * wr[j];
            dwr[j] += dx[j] * tr;
          }
          drow[r] += sr;
        }
      }
    }
    // Per-(batch, direction, channel) parameter partials.
    for (int j = 0; j < kLanes && d0 + j < D; ++j) {
      const int64_t kd = k * D + d0 + j;
      for (int64_t r = 0; r < R; ++r) g.dw_part[(b * 4 * D + kd) * R + r] = dw[r * kLanes + j];
      g.db_part[b * 4 * D + kd] = dbias[j];
      g.dds_part[b * 4 * D + kd] = dds[j];
      for (int64_t n = 0; n < N; ++n) g.dalog_part[(b * 4 * D + kd) * N + n] = dA[n * kLanes + j];
    }
  }
  add_cols_to_rows(w.ducol.data(), s.P, s.Q, w.durow.data());
  unpack_tile(w.durow.data(), L, s.Q, 1, D, s.P, s.Q, d0, g.du + b * D * L);
}

void backward(const CrossScanArgs& s, const CrossScanGrads& g) {
  const int64_t nblocks = (s.D + kLanes - 1) / kLanes;
  // A task = (batch, channel group); a group's blocks run in a fixed order and write the
  // group's own d(dbl) partial, so the result is independent of the thread count.
  at::parallel_for(0, s.B * g.ngroups, 1, [&](int64_t t0, int64_t t1) {
    Scratch w;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / g.ngroups, grp = t % g.ngroups;
      float* ddbl = g.ddbl_part + grp * s.B * 4 * s.L * s.C;
      const int64_t blk_end = std::min(nblocks, (grp + 1) * g.blocks_per_group);
      for (int64_t blk = grp * g.blocks_per_group; blk < blk_end; ++blk) {
        const int64_t d0 = blk * kLanes;
        switch (s.N) {
          case 1: backward_block<1>(s, g, b, d0, ddbl, w); break;
          case 4: backward_block<4>(s, g, b, d0, ddbl, w); break;
          case 8: backward_block<8>(s, g, b, d0, ddbl, w); break;
          case 16: backward_block<16>(s, g, b, d0, ddbl, w); break;
          default: backward_block<0>(s, g, b, d0, ddbl, w); break;
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------
// The compute bound: the forward's per-step arithmetic (exp of delta*A, state FMA, output
// FMA, for 16 states x kLanes channels) with every operand in registers and no loads or
// stores, run on all threads.  Returns state updates per second.
// ---------------------------------------------------------------------------------------
inline double state_update_peak(int64_t steps) {
  const int64_t tasks = at::get_num_threads();
  std::vector<double> sink(tasks, 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, tasks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      constexpr int NS = 16;
      alignas(64) float h[NS * kLanes], a[NS * kLanes], delta[kLanes], du[kLanes], y[kLanes];
      for (int i = 0; i < NS * kLanes; ++i) { h[i] = 0.f; a[i] = -1.0f - 0.01f * (i % 7); }
      for (int j = 0; j < kLanes; ++j) { delta[j] = 0.01f * (j + 1); du[j] = 0.5f; y[j] = 0.f; }
      for (int64_t l = 0; l < steps; ++l) {
        const float bn = 0.25f + 1e-7f * (float)l, cn = 0.5f;
        for (int n = 0; n < NS; ++n) {
          float* hn = h + n * kLanes;
          const float* an = a + n * kLanes;
          HS3C_SIMD
          for (int j = 0; j < kLanes; ++j) {
            hn[j] = hm::exp_fast_f(delta[j] * an[j]) * hn[j] + du[j] * bn;
            y[j] += cn * hn[j];
          }
        }
      }
      double acc = 0.0;
      for (int j = 0; j < kLanes; ++j) acc += y[j];
      sink[t] = acc;
    }
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile double keep = 0.0;
  for (double v : sink) keep = keep + v;
  (void)keep;
  return (double)tasks * (double)steps * 16.0 * kLanes / secs;
}

}  // namespace HS3C_ISA_NAMESPACE
}  // namespace cpu
}  // namespace hands3c
