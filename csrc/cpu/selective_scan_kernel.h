// The selective-scan CPU kernels (forward and backward), written once and compiled for several
// instruction sets: selective_scan_isa_*.cpp include this file inside a namespace of their own
// under a `#pragma GCC target`, and selective_scan_cpu.cpp picks one at run time.
//
// Vectorisation.  A block is up to kLanes = 16 consecutive channels of one batch element, one
// channel per SIMD lane; every per-step quantity is a 16-wide float array that the compiler
// keeps in vector registers (`HS3C_SIMD`), and the state is h[n][lane].  Vectorising across
// channels rather than across the N states needs no horizontal reduction for
// y_t = sum_n C_t[n] h_t[n], works the same for N = 1 as for N = 64, and lets B_t[n], C_t[n]
// be scalar broadcasts when all lanes share one group (the usual case: G = 1).
//
// Memory.  Time is walked in chunks of kCkpt = 64 steps (the checkpoint stride).  Per chunk the
// block's u, delta, z (and dout) are packed into small position-major tiles (kCkpt x 16 floats,
// converted from half/bfloat16 here), so every input element is read exactly once, the tiles
// stay in L1, and the inner loops read unit-stride 16-float rows.
//
// Backward.  Per chunk, walking the chunks from last to first: recompute the chunk's states
// from the forward's checkpoint (the state before its first step) into a (kCkpt+1) x N x 16 tile,
// then run the adjoint recurrence g_{t-1} = exp(delta_t A) (g_t + dy_t C_t) backwards through
// it.  dB and dC are sums over the channels of a group: a task (a "slice", fixed by the shapes
// alone) accumulates its blocks lane-wise into a chunk buffer, reduces the 16 lanes with a fixed
// shuffle tree, and writes its own rows; rows shared by several slices are summed in slice order.
// The chunks are walked in windows (see backward()): all tasks run one window, then its rows are
// summed, so the partial rows live in a small reused buffer instead of nslices x N x L floats.
// dA, dD and d(delta_bias) are written per (batch, channel) and summed over the batch by the host.
// Nothing depends on the thread count or the window, and there are no atomics.
//
// Requires before inclusion: <ATen/Parallel.h>, <c10/util/Half.h>, <c10/util/BFloat16.h>,
// <algorithm>, <cstdlib>, <cstring>, <new>, "hands3c/scan_math.h",
// "cpu/selective_scan_dispatch.h".

#ifndef HS3C_ISA_NAMESPACE
#error "define HS3C_ISA_NAMESPACE before including selective_scan_kernel.h"
#endif

namespace hands3c {
namespace cpu {
namespace HS3C_ISA_NAMESPACE {

namespace hm = hands3c::math;
using ss::BwdIO;
using ss::DType;
using ss::FwdOut;
using ss::Out3;
using ss::Plan;
using ss::Problem;
using ss::View3;
using ss::View4;

constexpr int kLanes = 16;                  // lanes (channels) per block
constexpr int kCkpt = 64;                  // steps per chunk = checkpoint stride
constexpr int kNMax = hm::kMaxState;    // largest N

// The per-element math of scan_math.h must be inlined into the SIMD loops to vectorise; GCC's
// inliner gives up on it inside large functions (the chunk drivers), leaving scalar calls to
// exp_f.  So every loop that calls it lives in a small function that inlines all its callees.
#if defined(__GNUC__)
#define HS3C_SS_LOOPS __attribute__((flatten, noinline))
#else
#define HS3C_SS_LOOPS
#endif

// 64-byte aligned scratch that grows on demand and is reused across a thread's tasks.  Defined
// in the per-ISA namespace (not std::vector) so that no inline function is shared between
// translation units compiled for different instruction sets.
struct Buf {
  float* p = nullptr;
  int64_t cap = 0;
  Buf() = default;
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { std::free(p); }
  float* get(int64_t n) {
    if (n > cap) {
      std::free(p);
      const size_t bytes = static_cast<size_t>((n * 4 + 63) / 64 * 64);
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (p == nullptr) throw std::bad_alloc();
      cap = n;
    }
    return p;
  }
};

// Calls f(T{}) with T the C++ type of dtype t (the conversion loops are then typed).
template <typename F>
inline void with_type(DType t, F&& f) {
  switch (t) {
    case DType::kFloat: f(float{}); break;
    case DType::kHalf: f(c10::Half{}); break;
    default: f(c10::BFloat16{}); break;
  }
}

inline int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

// tile[t*kLanes + j] = v[b, d0 + j, t0 + t] as float for j < nl, t < T; dead lanes get 0.
inline void pack_tile(const View3& v, int64_t b, int64_t d0, int nl, int64_t t0, int64_t T, float* tile) {
  with_type(v.t, [&](auto tag) {
    using S = decltype(tag);
    const S* base = static_cast<const S*>(v.p) + b * v.sb + d0 * v.sd + t0 * v.sl;
    if (v.sd == 1 && v.sl != 1) {  // channel-contiguous view: read each step's lanes in a row
      for (int64_t t = 0; t < T; ++t)
        for (int j = 0; j < nl; ++j) tile[t * kLanes + j] = static_cast<float>(base[t * v.sl + j]);
    } else if (v.sl == 1) {
      for (int j = 0; j < nl; ++j) {
        const S* src = base + j * v.sd;
        for (int64_t t = 0; t < T; ++t) tile[t * kLanes + j] = static_cast<float>(src[t]);
      }
    } else {
      for (int j = 0; j < nl; ++j) {
        const S* src = base + j * v.sd;
        for (int64_t t = 0; t < T; ++t) tile[t * kLanes + j] = static_cast<float>(src[t * v.sl]);
      }
    }
  });
  for (int64_t t = 0; t < T; ++t)
    for (int j = nl; j < kLanes; ++j) tile[t * kLanes + j] = 0.f;
}

// out[b, d0 + j, t0 + t] = tile[t*kLanes + j] for live lanes (out is contiguous (batch, dim, L)).
inline void unpack_tile(const Out3& o, int64_t dim, int64_t L, int64_t b, int64_t d0, int nl, int64_t t0,
                    int64_t T, const float* tile) {
  with_type(o.t, [&](auto tag) {
    using S = decltype(tag);
    S* base = static_cast<S*>(o.p) + (b * dim + d0) * L + t0;
    for (int j = 0; j < nl; ++j) {
      S* dst = base + j * L;
      for (int64_t t = 0; t < T; ++t) dst[t] = static_cast<S>(tile[t * kLanes + j]);
    }
  });
}

// B or C of one group, as scalars: dst[t*N + n] = v[b, g, n, t0 + t].  Returns the step stride
// of dst: N, or 0 when v does not vary in time (then only t = 0 is packed).
inline int64_t pack_bc_scalar(const View4& v, int64_t b, int64_t g, int64_t N, int64_t t0, int64_t T,
                              float* dst) {
  const int64_t TT = v.sl == 0 ? 1 : T;
  with_type(v.t, [&](auto tag) {
    using S = decltype(tag);
    const S* base = static_cast<const S*>(v.p) + b * v.sb + g * v.sg + t0 * v.sl;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < TT; ++t) dst[t * N + n] = static_cast<float>(base[n * v.sn + t * v.sl]);
  });
  return v.sl == 0 ? 0 : N;
}

// B or C per lane (lanes may read different groups): dst[(t*N + n)*kLanes + j] = v[b, g(d0+j), n, t0+t].
// Returns the step stride of dst in floats (0 when v does not vary in time).
inline int64_t pack_bc_lanes(const View4& v, int64_t b, int64_t d0, int nl, int64_t N, int64_t t0, int64_t T,
                             float* dst) {
  const int64_t TT = v.sl == 0 ? 1 : T;
  with_type(v.t, [&](auto tag) {
    using S = decltype(tag);
    for (int j = 0; j < nl; ++j) {
      const int64_t g = (d0 + j) / v.cpg;
      const S* base = static_cast<const S*>(v.p) + b * v.sb + g * v.sg + t0 * v.sl;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t t = 0; t < TT; ++t) dst[(t * N + n) * kLanes + j] = static_cast<float>(base[n * v.sn + t * v.sl]);
    }
  });
  for (int64_t r = 0; r < TT * N; ++r)
    for (int j = nl; j < kLanes; ++j) dst[r * kLanes + j] = 0.f;
  return v.sl == 0 ? 0 : N * kLanes;
}

// Per-lane constants of a block: a[n*kLanes + j] = A[d0+j, n], D and delta_bias (0 on dead lanes,
// which then carry u = 0 and a zero state through every step).
inline void load_lane_params(const Problem& p, int64_t d0, int nl, int64_t N, float* a, float* Dv, float* bias) {
  for (int64_t n = 0; n < N; ++n)
    for (int j = 0; j < kLanes; ++j) a[n * kLanes + j] = j < nl ? p.A[(d0 + j) * N + n] : 0.f;
  for (int j = 0; j < kLanes; ++j) {
    Dv[j] = (p.D != nullptr && j < nl) ? p.D[d0 + j] : 0.f;
    bias[j] = (p.delta_bias != nullptr && j < nl) ? p.delta_bias[d0 + j] : 0.f;
  }
}

// a2 = A log2 e (N x kLanes), the exponent scale of the decays exp(delta A) = 2^(delta a2).
inline void scale_log2e(const float* a, int64_t N, float* a2) {
  for (int64_t i = 0; i < N * kLanes; ++i) a2[i] = a[i] * 1.44269504088896341f;
}

// In place: dt = softplus(raw + bias) (or raw + bias); sig = d dt / d raw when sig != nullptr.
HS3C_SS_LOOPS void delta_transform(float* dt, float* sig, const float* bias, bool softplus, int64_t T) {
  for (int64_t t = 0; t < T; ++t) {
    float* row = dt + t * kLanes;
    if (softplus) {
      if (sig != nullptr) {
        float* sr = sig + t * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          const float x = row[j] + bias[j];
          sr[j] = hm::sigmoid_f(x);
          row[j] = hm::softplus_fast_f(x);
        }
      } else {
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) row[j] = hm::softplus_fast_f(row[j] + bias[j]);
      }
    } else {
      HS3C_SIMD
      for (int j = 0; j < kLanes; ++j) row[j] += bias[j];
      if (sig != nullptr) {
        float* sr = sig + t * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) sr[j] = 1.f;
      }
    }
  }
}

// Forward gate: y *= silu(z) over n elements.
HS3C_SS_LOOPS void gate_forward(float* y, const float* z, int64_t n) {
  HS3C_SIMD
  for (int64_t i = 0; i < n; ++i) y[i] *= hm::silu_f(z[i]);
}

// Backward gate: dz = dout * y * silu'(z), dy = dout * silu(z) (dy = dout without z).
HS3C_SS_LOOPS void gate_backward(const float* go, const float* y, const float* z, float* dy, float* dz, int64_t n) {
  if (z == nullptr) {
    std::memcpy(dy, go, sizeof(float) * n);
    return;
  }
  HS3C_SIMD
  for (int64_t i = 0; i < n; ++i) {
    dz[i] = go[i] * y[i] * hm::silu_grad_f(z[i]);
    dy[i] = go[i] * hm::silu_f(z[i]);
  }
}

// The scan through one chunk: h (N x kLanes, updated in place) over T steps.  Writes the pre-gate
// output y (T x kLanes).  kKeep (the backward's recomputation): the states live in hs instead of h,
// hs[t] being the state before step t (hs[0] set by the caller), and every decay exp(delta_t A)
// is kept in dec.  a2 is A log2 e (scale_log2e): the decays are exp2_fast_f(delta a2).
//   Bb/Cb: scalars [t*bst + n] (kUni) or lane rows [t*bst + n*kLanes]; bst = 0 when constant in time.
template <int NS, bool kUni, bool kKeep>
HS3C_SS_LOOPS void scan_chunk(int64_t N_, int64_t T, const float* ut, const float* dtt, const float* a,
                              const float* Dv, const float* Bb, int64_t bst, const float* Cb, int64_t cst,
                              float* h, float* yt, float* hs, float* dec) {
  const int64_t N = NS > 0 ? NS : N_;
  const int64_t NW = N * kLanes;
  for (int64_t t = 0; t < T; ++t) {
    const float* u_ = ut + t * kLanes;
    const float* d_ = dtt + t * kLanes;
    alignas(64) float dtu[kLanes], y[kLanes];
    HS3C_SIMD
    for (int j = 0; j < kLanes; ++j) {
      dtu[j] = d_[j] * u_[j];
      y[j] = Dv[j] * u_[j];
    }
    const float* hp = kKeep ? hs + t * NW : h;
    float* hc = kKeep ? hs + (t + 1) * NW : h;
    for (int64_t n = 0; n < N; ++n) {
      const float* an = a + n * kLanes;
      const float* hpn = hp + n * kLanes;
      float* hcn = hc + n * kLanes;
      float* en = kKeep ? dec + t * NW + n * kLanes : nullptr;
      if constexpr (kUni) {
        const float bn = Bb[t * bst + n], cn = Cb[t * cst + n];
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          const float e = hm::exp2_fast_f(d_[j] * an[j]);
          if constexpr (kKeep) en[j] = e;
          hcn[j] = e * hpn[j] + dtu[j] * bn;
          y[j] += cn * hcn[j];
        }
      } else {
        const float* bn = Bb + t * bst + n * kLanes;
        const float* cn = Cb + t * cst + n * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          const float e = hm::exp2_fast_f(d_[j] * an[j]);
          if constexpr (kKeep) en[j] = e;
          hcn[j] = e * hpn[j] + dtu[j] * bn[j];
          y[j] += cn[j] * hcn[j];
        }
      }
    }
    float* yo = yt + t * kLanes;
    HS3C_SIMD
    for (int j = 0; j < kLanes; ++j) yo[j] = y[j];
  }
}

// ---------------------------------------------------------------------------------------
// Lane reduction: out[i] = sum_j rows[i*kLanes + j] for 16 consecutive rows, by a fixed tree of
// shuffles and vertical adds (4 levels, 15 vector adds for 16 rows instead of 240 scalar adds).
// Level s pairs two vectors X, Y and keeps, per block of 2s lanes, X's and Y's half-block sums;
// feeding the rows in bit-reversed order leaves row i's sum in lane i.  GCC's generic vectors
// lower this to zmm, ymm or xmm shuffles depending on the target.
// ---------------------------------------------------------------------------------------
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

inline void lane_sums16(const float* rows, float* out) {
  static constexpr int kRev[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  const v16i lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
  const v16i hi8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
  const v16i lo4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27};
  const v16i hi4 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31};
  const v16i lo2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
  const v16i hi2 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
  const v16i lo1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30};
  const v16i hi1 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31};
  v16f r[16];
  for (int i = 0; i < 16; ++i) std::memcpy(&r[i], rows + kRev[i] * kLanes, sizeof(v16f));
  for (int k = 0; k < 8; ++k) r[k] = __builtin_shuffle(r[2 * k], r[2 * k + 1], lo8) + __builtin_shuffle(r[2 * k], r[2 * k + 1], hi8);
  for (int k = 0; k < 4; ++k) r[k] = __builtin_shuffle(r[2 * k], r[2 * k + 1], lo4) + __builtin_shuffle(r[2 * k], r[2 * k + 1], hi4);
  for (int k = 0; k < 2; ++k) r[k] = __builtin_shuffle(r[2 * k], r[2 * k + 1], lo2) + __builtin_shuffle(r[2 * k], r[2 * k + 1], hi2);
  r[0] = __builtin_shuffle(r[0], r[1], lo1) + __builtin_shuffle(r[0], r[1], hi1);
  std::memcpy(out, &r[0], sizeof(v16f));
}

// Writes a chunk's lane-wise dB (or dC) accumulator acc[(t*N + n)*kLanes + j] (rows padded with
// zeros to a multiple of 16) into the slice's group rows: row(g)[n*L + t0 + t].
//   One group for the whole slice: tree-reduce the 16 lanes.  Otherwise (a single block whose
//   lanes span groups): sum each group's run of lanes in lane order.
inline void store_group_rows(const float* acc, int64_t T, int64_t N, int64_t L, int64_t t0, int64_t cpg,
                             int64_t d0, int nl, int64_t g_first, int64_t g_last, float* rows) {
  const int64_t nrows = T * N;
  if (g_first == g_last) {
    alignas(64) float sums[16];
    for (int64_t r0 = 0; r0 < nrows; r0 += 16) {
      lane_sums16(acc + r0 * kLanes, sums);
      const int64_t rend = std::min<int64_t>(16, nrows - r0);
      for (int64_t i = 0; i < rend; ++i) {
        const int64_t r = r0 + i, t = r / N, n = r - t * N;
        rows[n * L + t0 + t] = sums[i];
      }
    }
    return;
  }
  for (int64_t g = g_first; g <= g_last; ++g) {
    const int jlo = static_cast<int>(std::max<int64_t>(g * cpg, d0) - d0);
    const int jhi = static_cast<int>(std::min<int64_t>((g + 1) * cpg, d0 + nl) - d0);
    float* dst = rows + (g - g_first) * N * L + t0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < T; ++t) {
        const float* a = acc + (t * N + n) * kLanes;
        float s = a[jlo];
        for (int j = jlo + 1; j < jhi; ++j) s += a[j];
        dst[n * L + t] = s;
      }
  }
}

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------
struct FwdScratch {
  Buf u, dt, z, y, B, C;
};

// One (batch element, block) task.  NS: N when known at compile time (0: runtime N <= 64).
// kUni: every lane reads one B group and one C group (scalar broadcasts).
template <int NS, bool kUni>
void fwd_block(const Problem& p, const Plan& pl, const FwdOut& o, int64_t b, int64_t blk, FwdScratch& w) {
  const int64_t N = NS > 0 ? NS : p.N;
  const int64_t L = p.L, dim = p.dim, nchunks = p.nchunks;
  const int64_t d0 = pl.block_d0[blk];
  const int nl = pl.block_nl[blk];
  alignas(64) float a[(NS > 0 ? NS : kNMax) * kLanes];
  alignas(64) float a2[(NS > 0 ? NS : kNMax) * kLanes];  // A log2 e: the decays are exp2_fast_f(delta a2)
  alignas(64) float h[(NS > 0 ? NS : kNMax) * kLanes];
  alignas(64) float Dv[kLanes], bias[kLanes];
  load_lane_params(p, d0, nl, N, a, Dv, bias);
  scale_log2e(a, N, a2);
  for (int64_t i = 0; i < N * kLanes; ++i) h[i] = 0.f;
  float* ut = w.u.get(kCkpt * kLanes);
  float* dtt = w.dt.get(kCkpt * kLanes);
  float* yt = w.y.get(kCkpt * kLanes);
  float* zt = p.z.p != nullptr ? w.z.get(kCkpt * kLanes) : nullptr;
  float* Bb = w.B.get(kUni ? kCkpt * N : kCkpt * N * kLanes);
  float* Cb = w.C.get(kUni ? kCkpt * N : kCkpt * N * kLanes);
  const int64_t gB = d0 / p.B.cpg, gC = d0 / p.C.cpg;
  int64_t bst = 0, cst = 0;
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = c * kCkpt, T = std::min<int64_t>(kCkpt, L - t0);
    for (int j = 0; j < nl; ++j) {  // checkpoint: the state before step t0
      float* dst = o.ckpt + ((b * dim + d0 + j) * nchunks + c) * N;
      for (int64_t n = 0; n < N; ++n) dst[n] = h[n * kLanes + j];
    }
    pack_tile(p.u, b, d0, nl, t0, T, ut);
    pack_tile(p.delta, b, d0, nl, t0, T, dtt);
    delta_transform(dtt, nullptr, bias, p.softplus, T);
    if (c == 0 || p.B.sl != 0)
      bst = kUni ? pack_bc_scalar(p.B, b, gB, N, t0, T, Bb) : pack_bc_lanes(p.B, b, d0, nl, N, t0, T, Bb);
    if (c == 0 || p.C.sl != 0)
      cst = kUni ? pack_bc_scalar(p.C, b, gC, N, t0, T, Cb) : pack_bc_lanes(p.C, b, d0, nl, N, t0, T, Cb);
    scan_chunk<NS, kUni, false>(N, T, ut, dtt, a2, Dv, Bb, bst, Cb, cst, h, yt, nullptr, nullptr);
    if (zt != nullptr) {
      pack_tile(p.z, b, d0, nl, t0, T, zt);
      gate_forward(yt, zt, T * kLanes);
    }
    unpack_tile(o.out, dim, L, b, d0, nl, t0, T, yt);
  }
  for (int j = 0; j < nl; ++j) {
    float* dst = o.last + (b * dim + d0 + j) * N;
    for (int64_t n = 0; n < N; ++n) dst[n] = h[n * kLanes + j];
  }
}

template <bool kUni>
void fwd_dispatch(const Problem& p, const Plan& pl, const FwdOut& o, int64_t b, int64_t blk, FwdScratch& w) {
  switch (p.N) {
    case 1: fwd_block<1, kUni>(p, pl, o, b, blk, w); break;
    case 4: fwd_block<4, kUni>(p, pl, o, b, blk, w); break;
    case 8: fwd_block<8, kUni>(p, pl, o, b, blk, w); break;
    case 16: fwd_block<16, kUni>(p, pl, o, b, blk, w); break;
    default: fwd_block<0, kUni>(p, pl, o, b, blk, w); break;
  }
}

inline void forward(const Problem& p, const Plan& pl, const FwdOut& o) {
  const int64_t nb = pl.nblocks;
  at::parallel_for(0, p.batch * nb, 1, [&](int64_t i0, int64_t i1) {
    FwdScratch w;
    for (int64_t i = i0; i < i1; ++i) {
      if (pl.uniform) fwd_dispatch<true>(p, pl, o, i / nb, i % nb, w);
      else fwd_dispatch<false>(p, pl, o, i / nb, i % nb, w);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------
struct BwdScratch {
  Buf u, dt, sg, z, go, y, dy, du, dd, dz;  // chunk tiles (kCkpt x kLanes)
  Buf hs, dec, accB, accC, B, C;
};

// The adjoint state a block carries from one window of chunks to the next (NW = N x kLanes
// floats for g and dA, kLanes for dD and d(delta_bias)); one per (batch element, block).
struct BlockCarry {
  float* g;
  float* dA;
  float* dD;
  float* db;
};

// Chunks [c_lo, c_hi] of one (batch element, slice) task, walked from c_hi down; see the file
// comment.  `carry` points at the slice's first block's state (blocks follow with a stride of
// cstride floats); it is initialised when c_hi is the last chunk and written out to io's per-channel
// partials when c_lo is 0.  The slice's dB/dC group rows go to rowsB/rowsC, whose rows are Lw
// steps long and start at step tw0.
template <int NS, bool kUni>
void bwd_slice(const Problem& p, const Plan& pl, const BwdIO& io, int64_t b, int64_t s, int64_t c_lo,
               int64_t c_hi, float* carry, int64_t cstride, float* rowsB, float* rowsC, int64_t tw0, int64_t Lw,
               BwdScratch& w) {
  const int64_t N = NS > 0 ? NS : p.N;
  const int64_t L = p.L, dim = p.dim, nchunks = p.nchunks;
  const int64_t NW = N * kLanes;
  const int64_t kb0 = pl.slice_begin[s], kb1 = pl.slice_begin[s + 1], K = kb1 - kb0;
  const bool has_z = p.z.p != nullptr;

  // Block k's carried state: g, dA (NW each), dD, db (kLanes each).
  auto st = [&](int64_t k) {
    float* base = carry + k * cstride;
    return BlockCarry{base, base + NW, base + 2 * NW, base + 2 * NW + kLanes};
  };
  if (c_hi == nchunks - 1) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t d0 = pl.block_d0[kb0 + k];
      const int nl = pl.block_nl[kb0 + k];
      const BlockCarry bc = st(k);
      for (int64_t n = 0; n < N; ++n)
        for (int j = 0; j < kLanes; ++j)
          bc.g[n * kLanes + j] = (io.dlast != nullptr && j < nl) ? io.dlast[(b * dim + d0 + j) * N + n] : 0.f;
      std::memset(bc.dA, 0, sizeof(float) * NW);
      std::memset(bc.dD, 0, sizeof(float) * kLanes);
      std::memset(bc.db, 0, sizeof(float) * kLanes);
    }
  }

  float* ut = w.u.get(kCkpt * kLanes);
  float* dtt = w.dt.get(kCkpt * kLanes);
  float* sgt = w.sg.get(kCkpt * kLanes);
  float* got = w.go.get(kCkpt * kLanes);
  float* yt = w.y.get(kCkpt * kLanes);
  float* dyt = w.dy.get(kCkpt * kLanes);
  float* dut = w.du.get(kCkpt * kLanes);
  float* ddt = w.dd.get(kCkpt * kLanes);
  float* zt = has_z ? w.z.get(kCkpt * kLanes) : nullptr;
  float* dzt = has_z ? w.dz.get(kCkpt * kLanes) : nullptr;
  float* hs = w.hs.get((kCkpt + 1) * NW);   // hs[t] = state before step t of the chunk
  float* dec = w.dec.get(kCkpt * NW);       // exp(delta_t A)
  const int64_t accRows = round16(kCkpt * N);
  float* accB = w.accB.get(accRows * kLanes);
  float* accC = w.accC.get(accRows * kLanes);
  float* Bb = w.B.get(kUni ? kCkpt * N : kCkpt * N * kLanes);
  float* Cb = w.C.get(kUni ? kCkpt * N : kCkpt * N * kLanes);

  // Channel range and groups of the slice, and its rows in the partial buffers.
  const int64_t dfirst = pl.block_d0[kb0];
  const int64_t dend = pl.block_d0[kb1 - 1] + pl.block_nl[kb1 - 1];
  const int64_t gB0 = dfirst / p.B.cpg, gB1 = (dend - 1) / p.B.cpg;
  const int64_t gC0 = dfirst / p.C.cpg, gC1 = (dend - 1) / p.C.cpg;

  alignas(64) float a[(NS > 0 ? NS : kNMax) * kLanes];
  alignas(64) float a2[(NS > 0 ? NS : kNMax) * kLanes];  // A log2 e: the decays are exp2_fast_f(delta a2)
  alignas(64) float Dv[kLanes], bias[kLanes];
  int64_t bst = 0, cst = 0;

  for (int64_t c = c_hi; c >= c_lo; --c) {
    const int64_t t0 = c * kCkpt, T = std::min<int64_t>(kCkpt, L - t0);
    std::memset(accB, 0, sizeof(float) * accRows * kLanes);
    std::memset(accC, 0, sizeof(float) * accRows * kLanes);
    if constexpr (kUni) {
      if (c == c_hi || p.B.sl != 0) bst = pack_bc_scalar(p.B, b, gB0, N, t0, T, Bb);
      if (c == c_hi || p.C.sl != 0) cst = pack_bc_scalar(p.C, b, gC0, N, t0, T, Cb);
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t blk = kb0 + k;
      const int64_t d0 = pl.block_d0[blk];
      const int nl = pl.block_nl[blk];
      load_lane_params(p, d0, nl, N, a, Dv, bias);
      scale_log2e(a, N, a2);
      if constexpr (!kUni) {
        if (K > 1 || c == c_hi || p.B.sl != 0) bst = pack_bc_lanes(p.B, b, d0, nl, N, t0, T, Bb);
        if (K > 1 || c == c_hi || p.C.sl != 0) cst = pack_bc_lanes(p.C, b, d0, nl, N, t0, T, Cb);
      }
      pack_tile(p.u, b, d0, nl, t0, T, ut);
      pack_tile(p.delta, b, d0, nl, t0, T, dtt);
      delta_transform(dtt, sgt, bias, p.softplus, T);
      pack_tile(io.dout, b, d0, nl, t0, T, got);
      if (has_z) pack_tile(p.z, b, d0, nl, t0, T, zt);

      // Recompute the chunk's states from the checkpoint (and the pre-gate output y).
      for (int64_t n = 0; n < N; ++n)
        for (int j = 0; j < kLanes; ++j)
          hs[n * kLanes + j] = j < nl ? io.ckpt[((b * dim + d0 + j) * nchunks + c) * N + n] : 0.f;
      scan_chunk<NS, kUni, true>(N, T, ut, dtt, a2, Dv, Bb, bst, Cb, cst, nullptr, yt, hs, dec);

      // Adjoint recurrence backwards through the chunk.  g holds dL/dh_t without step t's own
      // output term on entry to step t.
      gate_backward(got, yt, zt, dyt, dzt, T * kLanes);
      const BlockCarry bc = st(k);
      float* g = bc.g;
      float* dAk = bc.dA;
      float* dDk = bc.dD;
      float* dbk = bc.db;
      for (int64_t t = T - 1; t >= 0; --t) {
        const float* u_ = ut + t * kLanes;
        const float* d_ = dtt + t * kLanes;
        const float* hp = hs + t * NW;
        const float* hc = hs + (t + 1) * NW;
        const float* e_ = dec + t * NW;
        const float* dy = dyt + t * kLanes;
        alignas(64) float duv[kLanes], ddv[kLanes];
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          dDk[j] += dy[j] * u_[j];
          duv[j] = dy[j] * Dv[j];
          ddv[j] = 0.f;
        }
        for (int64_t n = 0; n < N; ++n) {
          const float* an = a + n * kLanes;
          const float* hpn = hp + n * kLanes;
          const float* hcn = hc + n * kLanes;
          const float* en = e_ + n * kLanes;
          float* gn = g + n * kLanes;
          float* dAn = dAk + n * kLanes;
          float* aB = accB + (t * N + n) * kLanes;
          float* aC = accC + (t * N + n) * kLanes;
          if constexpr (kUni) {
            const float bn = Bb[t * bst + n], cn = Cb[t * cst + n];
            HS3C_SIMD
            for (int j = 0; j < kLanes; ++j) {
              const float gv = gn[j] + dy[j] * cn;        // dL/dh_t
              aC[j] += dy[j] * hcn[j];
              const float gdt = gv * d_[j];
              aB[j] += gdt * u_[j];
              duv[j] += gdt * bn;
              const float geh = gv * en[j] * hpn[j];
              ddv[j] += gv * bn * u_[j] + geh * an[j];
              dAn[j] += geh * d_[j];
              gn[j] = gv * en[j];                          // part of dL/dh_{t-1}
            }
          } else {
            const float* bn = Bb + t * bst + n * kLanes;
            const float* cn = Cb + t * cst + n * kLanes;
            HS3C_SIMD
            for (int j = 0; j < kLanes; ++j) {
              const float gv = gn[j] + dy[j] * cn[j];
              aC[j] += dy[j] * hcn[j];
              const float gdt = gv * d_[j];
              aB[j] += gdt * u_[j];
              duv[j] += gdt * bn[j];
              const float geh = gv * en[j] * hpn[j];
              ddv[j] += gv * bn[j] * u_[j] + geh * an[j];
              dAn[j] += geh * d_[j];
              gn[j] = gv * en[j];
            }
          }
        }
        const float* sg_ = sgt + t * kLanes;
        float* du_ = dut + t * kLanes;
        float* dd_ = ddt + t * kLanes;
        HS3C_SIMD
        for (int j = 0; j < kLanes; ++j) {
          const float dd = ddv[j] * sg_[j];
          dbk[j] += dd;
          dd_[j] = dd;
          du_[j] = duv[j];
        }
      }
      unpack_tile(io.du, dim, L, b, d0, nl, t0, T, dut);
      unpack_tile(io.ddelta, dim, L, b, d0, nl, t0, T, ddt);
      if (has_z) unpack_tile(io.dz, dim, L, b, d0, nl, t0, T, dzt);
    }
    const int64_t bd0 = pl.block_d0[kb0];
    const int bnl = pl.block_nl[kb0];
    store_group_rows(accB, T, N, Lw, t0 - tw0, p.B.cpg, bd0, bnl, gB0, gB1, rowsB);
    store_group_rows(accC, T, N, Lw, t0 - tw0, p.C.cpg, bd0, bnl, gC0, gC1, rowsC);
  }

  if (c_lo != 0) return;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t d0 = pl.block_d0[kb0 + k];
    const int nl = pl.block_nl[kb0 + k];
    const BlockCarry bc = st(k);
    for (int j = 0; j < nl; ++j) {
      const int64_t bd = b * dim + d0 + j;
      for (int64_t n = 0; n < N; ++n) io.dA_part[bd * N + n] = bc.dA[n * kLanes + j];
      io.dD_part[bd] = bc.dD[j];
      io.dbias_part[bd] = bc.db[j];
    }
  }
}

template <bool kUni, typename... Args>
void bwd_dispatch(const Problem& p, Args&&... args) {
  switch (p.N) {
    case 1: bwd_slice<1, kUni>(p, args...); break;
    case 4: bwd_slice<4, kUni>(p, args...); break;
    case 8: bwd_slice<8, kUni>(p, args...); break;
    case 16: bwd_slice<16, kUni>(p, args...); break;
    default: bwd_slice<0, kUni>(p, args...); break;
  }
}

// dst[e] = sum of the rows srcs[0..ns) (each `stride` floats apart in src) in that order, e < n.
HS3C_SS_LOOPS void sum_rows(float* dst, const float* src, const int64_t* srcs, int64_t ns, int64_t stride,
                            int64_t n) {
  std::memcpy(dst, src + srcs[0] * stride, sizeof(float) * n);
  for (int64_t k = 1; k < ns; ++k) {
    const float* r = src + srcs[k] * stride;
    HS3C_SIMD
    for (int64_t e = 0; e < n; ++e) dst[e] += r[e];
  }
}

// Cache blocking of the backward.  Time is walked in windows of `wc` chunks, last window first.
// In each window every (batch, slice) task runs its chunks (carrying its adjoint state in
// `carry` from window to window), writing its dB/dC group rows into a window-sized scratch
// buffer; then the rows of each group are summed in slice order into dB/dC.  The scratch buffer
// is reused by every window, so it stays in cache (the whole-length partial rows it replaces
// were ~2 x nslices x N x L floats written once and read back from memory).  The sums are the
// same numbers added in the same order, whatever the window or the thread count.
inline void backward(const Problem& p, const Plan& pl, const BwdIO& io) {
  const int64_t ns = pl.nslices, N = p.N, nchunks = p.nchunks;
  const int64_t GB = p.B.G, GC = p.C.G;
  const int64_t nrows = pl.nrowsB + pl.nrowsC;
  // Window: the scratch rows of all tasks (batch x nrows x N x 64 wc floats) within ~1 MiB.
  const int64_t per_chunk = p.batch * nrows * N * kCkpt * 4;
  const int64_t wc = std::max<int64_t>(1, std::min<int64_t>(nchunks, (int64_t{1} << 20) / std::max<int64_t>(1, per_chunk)));
  const int64_t Lw = wc * kCkpt;

  const int64_t NW = N * kLanes, cstride = 2 * NW + 2 * kLanes;
  Buf carry_buf, rows_buf;
  float* carry = carry_buf.get(p.batch * pl.nblocks * cstride);
  const int64_t rowlen = N * Lw;  // one group row of the scratch: N x Lw
  float* rows = rows_buf.get(p.batch * nrows * rowlen);
  const int nthreads = std::max(1, at::get_num_threads());
  struct ScratchSet {  // one per thread, reused by every window
    BwdScratch* w;
    explicit ScratchSet(int n) : w(new BwdScratch[n]) {}
    ~ScratchSet() { delete[] w; }
  } scratch(nthreads);

  for (int64_t chi = nchunks - 1; chi >= 0; chi -= wc) {
    const int64_t clo = std::max<int64_t>(0, chi - wc + 1);
    const int64_t tw0 = clo * kCkpt, Tw = std::min<int64_t>(p.L, (chi + 1) * kCkpt) - tw0;
    at::parallel_for(0, p.batch * ns, 1, [&](int64_t i0, int64_t i1) {
      const int tid = std::min(at::get_thread_num(), nthreads - 1);
      BwdScratch& w = scratch.w[tid];
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / ns, s = i % ns;
        float* c0 = carry + (b * pl.nblocks + pl.slice_begin[s]) * cstride;
        float* rB = rows + (b * nrows + pl.rowB[s]) * rowlen;
        float* rC = rows + (b * nrows + pl.nrowsB + pl.rowC[s]) * rowlen;
        if (pl.uniform) bwd_dispatch<true>(p, pl, io, b, s, clo, chi, c0, cstride, rB, rC, tw0, Lw, w);
        else bwd_dispatch<false>(p, pl, io, b, s, clo, chi, c0, cstride, rB, rC, tw0, Lw, w);
      }
    });
    // Sum each (batch, group, n) row of the window in slice order into dB / dC.
    const int64_t nB = p.batch * GB * N, nC = p.batch * GC * N;
    at::parallel_for(0, nB + nC, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const bool isB = i < nB;
        const int64_t r = isB ? i : i - nB, G = isB ? GB : GC;
        const int64_t b = r / (G * N), g = (r / N) % G, n = r % N;
        const int64_t* gb = isB ? pl.grpB_begin : pl.grpC_begin;
        const int64_t* src = (isB ? pl.grpB_rows : pl.grpC_rows) + gb[g];
        const float* base = rows + (b * nrows + (isB ? 0 : pl.nrowsB)) * rowlen + n * Lw;
        float* dst = (isB ? io.dB : io.dC) + ((b * G + g) * N + n) * p.L + tw0;
        sum_rows(dst, base, src, gb[g + 1] - gb[g], rowlen, Tw);
      }
    });
  }
}

}  // namespace HS3C_ISA_NAMESPACE
}  // namespace cpu
}  // namespace hands3c
