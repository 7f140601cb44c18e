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
constexpr float kLog2e = 1.44269504088896341f;

// Loads the per-direction constants of one channel block; padded lanes (d >= D) get values
// that keep their state at zero and contribute nothing (u = 0, W = 0, D = 0).
struct BlockParams {
  std::vector<float> w;    // [R][kLanes]
  float bias[kLanes];
  std::vector<float> a;    // [N][kLanes], A = -exp(A_logs)
  std::vector<float> a2;   // [N][kLanes], A log2 e: the decay exp(delta A) is exp2_decay_f(delta a2)
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
    a2.resize(s.N * kLanes);
    for (int64_t i = 0; i < s.N * kLanes; ++i) a2[i] = a[i] * kLog2e;
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

// kLanes floats as one value: GCC keeps it in one zmm (two ymm, four xmm on the narrower builds),
// so accumulators declared with it stay in registers where float arrays would go through memory.
typedef float v16f __attribute__((vector_size(64)));
// The same, readable from any float address (4-byte alignment, may alias the floats it covers).
typedef float v16f_u __attribute__((vector_size(64), aligned(4), may_alias));
#define HS3C_LOAD16(ptr) (*reinterpret_cast<const v16f_u*>(ptr))

// Delta for kLanes channels at NP positions: softplus(W[k, d, :] . dt_low + bias), x and delta
// NP consecutive rows of kLanes.  Each dot product runs in four partial sums (r mod 4) held in
// registers, so its FMAs form four short dependency chains instead of one R long.  Every
// position gets the same arithmetic whatever NP is (bit-identical results).  One position's
// delta is a chain of ~30 dependent operations (dot product, then the softplus polynomials);
// the out-of-order window does not hold enough positions of the forward's chunk loop to hide
// it, so that loop ran at about half the throughput of its operation count: the forward asks
// for two positions at once (NP = 2), whose interleaved chains fill the FMA pipes.
template <int NP>
inline void compute_delta(const float* const (&rows)[NP], const float* w, const float* bias, int64_t R, float* x,
                          float* delta) {
  v16f acc0[NP], acc1[NP], acc2[NP], acc3[NP];
  for (int p = 0; p < NP; ++p) {
    acc0[p] = HS3C_LOAD16(bias);
    acc1[p] = acc2[p] = acc3[p] = v16f{};
  }
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const v16f w0 = HS3C_LOAD16(w + r * kLanes), w1 = HS3C_LOAD16(w + (r + 1) * kLanes);
    const v16f w2 = HS3C_LOAD16(w + (r + 2) * kLanes), w3 = HS3C_LOAD16(w + (r + 3) * kLanes);
    for (int p = 0; p < NP; ++p) {
      acc0[p] += w0 * rows[p][r];
      acc1[p] += w1 * rows[p][r + 1];
      acc2[p] += w2 * rows[p][r + 2];
      acc3[p] += w3 * rows[p][r + 3];
    }
  }
  for (; r < R; ++r) {
    const v16f wr = HS3C_LOAD16(w + r * kLanes);
    for (int p = 0; p < NP; ++p) acc0[p] += wr * rows[p][r];
  }
  for (int p = 0; p < NP; ++p) {
    const v16f xv = (acc0[p] + acc1[p]) + (acc2[p] + acc3[p]);
    std::memcpy(x + p * kLanes, &xv, sizeof(xv));
  }
  HS3C_SIMD
  for (int i = 0; i < NP * kLanes; ++i) delta[i] = hm::softplus_fast_f(x[i]);
}

// Per-task scratch, reused across the tasks a thread runs.
struct Scratch {
  std::vector<float> urow, ucol, yrow, ycol, grow, gcol, durow, ducol, work;
};

// Scan index of step l of direction k (position in that direction's row/column-major order).
inline int64_t scan_index(int k, int64_t l, int64_t L) { return k >= 2 ? L - 1 - l : l; }

// One step of the forward scan for kLanes channels and N states, the kernel's inner loop (and
// the whole of the compute bound, state_update_peak):
//   h[n] = exp2(delta a2[n]) h[n] + (delta u) B[n],   y += C[n] h[n].
// Per state and 16 lanes that is 15 vector operations on AVX-512 (see state_update_peak).
template <int NS>
inline void scan_step(int64_t N_, const float* a2, const float* delta, const float* du, const float* Bv,
                      const float* Cv, float* h, float* y) {
  const int64_t N = NS > 0 ? NS : N_;
  for (int64_t n = 0; n < N; ++n) {
    const float bn = Bv[n], cn = Cv[n];
    float* hn = h + n * kLanes;
    const float* an = a2 + n * kLanes;
    HS3C_SIMD
    for (int j = 0; j < kLanes; ++j) {
      hn[j] = hm::exp2_decay_f(delta[j] * an[j]) * hn[j] + du[j] * bn;
      y[j] += cn * hn[j];
    }
  }
}

// Asks for the cache lines step l will read (its projection row, u row and output row) while the
// current chunk is scanned: the channel branch's per-direction projections (L = 16384 rows of
// R + 2N floats, 3 MiB) do not fit in L2, and the first touch of each row otherwise stalls the
// chunk's delta pass.
inline void prefetch_step(int k, int64_t l, int64_t L, int64_t C, const float* dbl_k, const float* utile,
                          const float* ytile) {
  const int64_t si = scan_index(k, l, L);
  const char* row = reinterpret_cast<const char*>(dbl_k + si * C);
  for (int64_t off = 0; off < C * (int64_t)sizeof(float); off += 64) __builtin_prefetch(row + off);
  __builtin_prefetch(utile + si * kLanes);
  __builtin_prefetch(ytile + si * kLanes, 1);
}

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
  alignas(64) float x[2 * kLanes], y[kLanes];
  // Per chunk, [kCkpt][kLanes]: delta, delta u and D u (the output's skip term); 12 KiB, L1.
  alignas(64) float deltas[kCkpt * kLanes], dus[kCkpt * kLanes], ys[kCkpt * kLanes];
  // A log2 e in a 64-byte aligned local copy: its rows are whole-vector loads in every step of
  // the inner loop (std::vector's storage is only 16-byte aligned, and a split load there costs
  // the loop measurably).
  alignas(64) float a[(NS > 0 ? NS : hm::kMaxState) * kLanes];
  for (int k = 0; k < 4; ++k) {
    bp.load(s, k, d0);
    std::copy(bp.a2.begin(), bp.a2.end(), a);
    const float* utile = (k & 1) ? w.ucol.data() : w.urow.data();
    float* ytile = (k & 1) ? w.ycol.data() : w.yrow.data();
    const float* dbl_k = s.dbl + (b * 4 + k) * L * C;
    std::fill(h, h + N * kLanes, 0.f);
    for (int64_t l0 = 0; l0 < L; l0 += kCkpt) {
      const int64_t T = std::min<int64_t>(kCkpt, L - l0);
      {
        // checkpoints[b, k, d, chunk, n]: the state before step l0.
        const int64_t chunk = l0 / kCkpt;
        for (int j = 0; j < kLanes && d0 + j < s.D; ++j) {
          float* dst = ckpt + (((b * 4 + k) * s.D + d0 + j) * nchunks + chunk) * N;
          for (int64_t n = 0; n < N; ++n) dst[n] = h[n * kLanes + j];
        }
      }
      // The chunk's per-position work first (delta, delta u, D u: shared by all N states).  Its
      // steps are independent, so their long softplus dependency chains overlap each other here
      // instead of stalling the state recurrence one step at a time.
      int64_t t = 0;
      for (; t + 2 <= T; t += 2) {
        const int64_t si0 = scan_index(k, l0 + t, L), si1 = scan_index(k, l0 + t + 1, L);
        compute_delta<2>({dbl_k + si0 * C, dbl_k + si1 * C}, bp.w.data(), bp.bias, R, x, deltas + t * kLanes);
      }
      if (t < T) compute_delta<1>({dbl_k + scan_index(k, l0 + t, L) * C}, bp.w.data(), bp.bias, R, x, deltas + t * kLanes);
      for (t = 0; t < T; ++t) {
        const float* dt = deltas + t * kLanes;
        const float* ut = utile + scan_index(k, l0 + t, L) * kLanes;
        float* dut = dus + t * kLanes;
        float* y0 = ys + t * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          dut[j] = dt[j] * ut[j];
          y0[j] = bp.dskip[j] * ut[j];
        }
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t si = scan_index(k, l0 + t, L);
        if (l0 + kCkpt + t < L) prefetch_step(k, l0 + kCkpt + t, L, C, dbl_k, utile, ytile);
        const float* row = dbl_k + si * C;
        const float* delta = deltas + t * kLanes;
        const float* du = dus + t * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) y[j] = ys[t * kLanes + j];
        scan_step<NS>(N, a, delta, du, row + R, row + R + N, h, y);
        float* yt = ytile + si * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) yt[j] += y[j];
      }
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

// The backward's two inner loops, shared with its compute bound (backward_update_peak).
// recompute_step: one forward step from the state h, keeping the state before it (hp) and the
// decays (dc), N x kLanes each.
template <int NS>
inline void recompute_step(int64_t N_, const float* a2, const float* dt, const float* ut, const float* Bv, float* h,
                           float* hp, float* dc) {
  const int64_t N = NS > 0 ? NS : N_;
  for (int64_t n = 0; n < N; ++n) {
    float* hn = h + n * kLanes;
    float* hpn = hp + n * kLanes;
    float* dcn = dc + n * kLanes;
    const float* an = a2 + n * kLanes;
    const float bn = Bv[n];
    HS3C_SIMD
    for (int j = 0; j < kLanes; ++j) {
      const float e = hm::exp2_decay_f(dt[j] * an[j]);
      hpn[j] = hn[j];
      dcn[j] = e;
      hn[j] = e * hn[j] + dt[j] * ut[j] * bn;
    }
  }
}

// adjoint_step: one step of the adjoint recurrence.  adj holds dL/dh after the step (from later
// steps) and becomes the part flowing to the step before; dA, duacc and ddelta accumulate per
// lane, dB[n] and dC[n] (sums over the lanes) are added to dBrow / dCrow.
template <int NS>
inline void adjoint_step(int64_t N_, const float* a, const float* dt, const float* ut, const float* gy,
                         const float* Bv, const float* Cv, const float* hp, const float* dc, float* adj, float* dA,
                         float* duacc, float* ddelta, float* dBrow, float* dCrow) {
  const int64_t N = NS > 0 ? NS : N_;
  for (int64_t n = 0; n < N; ++n) {
    const float bn = Bv[n], cn = Cv[n];
    float* an_adj = adj + n * kLanes;
    const float* hpn = hp + n * kLanes;
    const float* dcn = dc + n * kLanes;
    const float* an = a + n * kLanes;
    float* dAn = dA + n * kLanes;
    float sc = 0.f, sb = 0.f;
    _Pragma("omp simd reduction(+:sc,sb)")
    for (int j = 0; j < kLanes; ++j) {
      const float hl = dcn[j] * hpn[j] + dt[j] * ut[j] * bn;
      sc += gy[j] * hl;
      const float gj = an_adj[j] + gy[j] * cn;
      sb += gj * dt[j] * ut[j];
      duacc[j] += gj * dt[j] * bn;
      const float gdh = gj * dcn[j] * hpn[j];
      ddelta[j] += gj * bn * ut[j] + gdh * an[j];
      dAn[j] += gdh * dt[j];
      an_adj[j] = gj * dcn[j];
    }
    dBrow[n] += sb;
    dCrow[n] += sc;
  }
}

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
    const float* a2 = bp.a2.data();
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
        compute_delta<1>({row}, bp.w.data(), bp.bias, R, xt, dt);
        recompute_step<NS>(N, a2, dt, utile + si * kLanes, row + R, h, hprev + t * N * kLanes,
                           decay + t * N * kLanes);
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
        adjoint_step<NS>(N, a, dt, ut, gy, Bv, Cv, hprev + t * N * kLanes, decay + t * N * kLanes, adj, dA,
                         duacc, ddelta, drow + R, drow + R + N);
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
// The compute bounds of the benchmark (benchmarks/suites.py, bench_selective_scan_cpu.py).
//
// state_update_peak: the forward's own inner loop (scan_step<16>, the same code) for 16 states
// x kLanes channels, fed from a few L1-resident steps of inputs instead of the projection rows,
// on all threads.  Returns state updates per second.
//
// fma_peak: the processor's FMA issue rate for the instruction set of this build: kAcc
// independent accumulator vectors of kLanes floats (enough to cover the FMA latency on every
// FMA port: latency 4 x 2 ports needs 8), each updated by a*m + c per round, no loads or stores.
// Returns kLanes-wide FMAs per second on all threads (one zmm FMA on AVX-512, two ymm on AVX2;
// the baseline build has no FMA instruction: its shim reports multiplies and adds, two per update).
//
// Operations per state update of scan_step on AVX-512 (GCC 12, objdump of the compiled loop),
// per 16 lanes of one state n: delta*a2 (vmulps), the clamp (vcmpnltps into a mask, applied by
// the final multiply's zero-masking), t = x + M (vaddps), k = t - M (vaddps), r = x - k
// (vsubps), 2^k = t << 23 (vpslld), the polynomial (5 vfmadd), p * 2^k (vmulps), (delta u) B
// (vmulps with a broadcast of B[n]), the state update (vfmadd), y += C h (vfmadd): 15 vector
// operations, each one issue slot of the FMA ports (p0/p5).  Loads, the store of h and loop
// control use other ports.  kOpsPerUpdate below is that count; the processor bound is
// fma_peak x kLanes / kOpsPerUpdate state updates per second.
// ---------------------------------------------------------------------------------------
// The shim of each instruction set defines the count for its build (`#pragma GCC target` does not
// define __AVX512F__ and friends in C++, so the header cannot tell).
#ifndef HS3C_OPS_PER_UPDATE
#error "define HS3C_OPS_PER_UPDATE (operations per state update of scan_step in this build) before inclusion"
#endif
constexpr int kOpsPerUpdate = HS3C_OPS_PER_UPDATE;

inline double state_update_peak(int64_t steps) {
  const int64_t tasks = at::get_num_threads();
  std::vector<double> sink(tasks, 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, tasks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      constexpr int NS = 16, kRing = 4;
      alignas(64) float h[NS * kLanes], a[NS * kLanes], y[kLanes];
      alignas(64) float deltas[kRing][kLanes], dus[kRing][kLanes], rows[kRing][2 * NS];
      for (int i = 0; i < NS * kLanes; ++i) { h[i] = 0.f; a[i] = (-1.0f - 0.01f * (i % 7)) * kLog2e; }
      for (int q = 0; q < kRing; ++q) {
        for (int j = 0; j < kLanes; ++j) { deltas[q][j] = 0.01f * (j + 1 + q); dus[q][j] = 0.5f - 0.01f * q; }
        for (int n = 0; n < 2 * NS; ++n) rows[q][n] = 0.25f + 0.01f * (n + q);
      }
      for (int j = 0; j < kLanes; ++j) y[j] = 0.f;
      for (int64_t l = 0; l < steps; ++l) {
        const int q = (int)(l % kRing);
        scan_step<NS>(NS, a, deltas[q], dus[q], rows[q], rows[q] + NS, h, y);
      }
      double acc = 0.0;
      for (int j = 0; j < kLanes; ++j) acc += y[j] + h[j];
      sink[t] = acc;
    }
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile double keep = 0.0;
  for (double v : sink) keep = keep + v;
  (void)keep;
  return (double)tasks * (double)steps * 16.0 * kLanes / secs;
}

inline double fma_peak(int64_t steps) {
  const int64_t tasks = at::get_num_threads();
  std::vector<double> sink(tasks, 0.0);
  constexpr int kAcc = 16;
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, tasks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      // m < 1 and c > 0 keep every accumulator at a normal value (it tends to c / (1 - m)).
      const v16f m = {0.999999f, 0.999998f, 0.999997f, 0.999996f, 0.999995f, 0.999994f, 0.999993f, 0.999992f,
                      0.999991f, 0.999990f, 0.999989f, 0.999988f, 0.999987f, 0.999986f, 0.999985f, 0.999984f};
      const v16f c = m * 1e-7f;
      v16f a0 = c, a1 = a0 + c, a2 = a1 + c, a3 = a2 + c, a4 = a3 + c, a5 = a4 + c, a6 = a5 + c, a7 = a6 + c;
      v16f a8 = a7 + c, a9 = a8 + c, a10 = a9 + c, a11 = a10 + c, a12 = a11 + c, a13 = a12 + c, a14 = a13 + c,
           a15 = a14 + c;
      for (int64_t l = 0; l < steps; ++l) {
        a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
        a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
        a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
        a12 = a12 * m + c; a13 = a13 * m + c; a14 = a14 * m + c; a15 = a15 * m + c;
      }
      const v16f s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) +
                     ((a12 + a13) + (a14 + a15));
      double acc = 0.0;
      for (int j = 0; j < kLanes; ++j) acc += s[j];
      sink[t] = acc;
    }
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile double keep = 0.0;
  for (double v : sink) keep = keep + v;
  (void)keep;
  return (double)tasks * (double)steps * kAcc / secs;
}

// backward_update_peak: the backward's own inner loops (recompute_step and adjoint_step, the same
// code) for 16 states x kLanes channels over chunks of kRing steps (recompute forwards, adjoint
// backwards, as the kernel walks a checkpoint chunk) with every input L1-resident, on all
// threads.  Returns backward state updates (one recompute and one adjoint step of one state of
// one lane) per second.
inline double backward_update_peak(int64_t steps) {
  const int64_t tasks = at::get_num_threads();
  std::vector<double> sink(tasks, 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, tasks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      constexpr int NS = 16, kRing = 8;
      alignas(64) float h[NS * kLanes], a[NS * kLanes], a2[NS * kLanes], adj[NS * kLanes], dA[NS * kLanes];
      alignas(64) float hp[kRing][NS * kLanes], dc[kRing][NS * kLanes];
      alignas(64) float dts[kRing][kLanes], us[kRing][kLanes], gys[kRing][kLanes], rows[kRing][2 * NS];
      alignas(64) float drows[kRing][2 * NS], duacc[kLanes], ddelta[kLanes];
      for (int i = 0; i < NS * kLanes; ++i) {
        h[i] = 0.f; adj[i] = 0.f; dA[i] = 0.f;
        a[i] = -1.0f - 0.01f * (i % 7);
        a2[i] = a[i] * kLog2e;
      }
      for (int q = 0; q < kRing; ++q) {
        for (int j = 0; j < kLanes; ++j) {
          dts[q][j] = 0.01f * (j + 1 + q); us[q][j] = 0.5f - 0.01f * q; gys[q][j] = 0.1f + 0.001f * j;
        }
        for (int n = 0; n < 2 * NS; ++n) { rows[q][n] = 0.25f + 0.01f * (n + q); drows[q][n] = 0.f; }
      }
      for (int j = 0; j < kLanes; ++j) { duacc[j] = 0.f; ddelta[j] = 0.f; }
      for (int64_t l0 = 0; l0 < steps; l0 += kRing) {
        for (int q = 0; q < kRing; ++q) recompute_step<NS>(NS, a2, dts[q], us[q], rows[q], h, hp[q], dc[q]);
        for (int q = kRing - 1; q >= 0; --q)
          adjoint_step<NS>(NS, a, dts[q], us[q], gys[q], rows[q], rows[q] + NS, hp[q], dc[q], adj, dA, duacc,
                           ddelta, drows[q], drows[q] + NS);
      }
      double acc = 0.0;
      for (int j = 0; j < kLanes; ++j) acc += duacc[j] + ddelta[j] + dA[j] + drows[0][j];
      sink[t] = acc;
    }
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile double keep = 0.0;
  for (double v : sink) keep = keep + v;
  (void)keep;
  const int64_t rounded = (steps + 7) / 8 * 8;
  return (double)tasks * (double)rounded * 16.0 * kLanes / secs;
}

}  // namespace HS3C_ISA_NAMESPACE
}  // namespace cpu
}  // namespace hands3c
