// CPU kernel of the S3C merge: out = LayerNorm(y_spatial + y_channel) * silu(z) over the
// last dimension, forward and backward.
//
// Any strides are accepted.  The S3C block's scans write both branch outputs in its
// (B, H, W, d) row layout (cross_scan_selective_scan's out_order), so there every input row is
// contiguous and is read in place: x = y_spatial + y_channel is summed into one L1-resident
// row right before that row is normalised, the next row's lines are prefetched meanwhile, and
// a float32 z is not copied at all (fwd_rows_in_place, and the backward's in_place branch).  Inputs whose channel stride is not 1
// (e.g. the permuted views of contiguous (B, d, H, W) / (B, W, d, H) branch outputs) are
// gathered once per tile of kG rows into a contiguous (kG x C) tile with the loop order that
// reads them with unit stride (channel outer, row inner when consecutive rows are adjacent in
// memory), so no full transposed copy is ever made.  Either way the rows, tiles and reduction
// order are the same, so the result does not depend on the layout.  Statistics are
// accumulated in double.
// The hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (GCC target_clones); the backward's weight/bias reduction is per fixed block of rows,
// summed in block order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/cpu_ops.h"
#include "hands3c/scan_math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define HS3C_MERGE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HS3C_MERGE_CLONES
#endif
#if defined(_OPENMP)
#define HS3C_MERGE_PRAGMA(x) _Pragma(#x)
#define HS3C_SIMD_SUM2(a, b) HS3C_MERGE_PRAGMA(omp simd reduction(+ : a, b))
#define HS3C_SIMD_SUM1(a) HS3C_MERGE_PRAGMA(omp simd reduction(+ : a))
#else
#define HS3C_SIMD_SUM2(a, b)
#define HS3C_SIMD_SUM1(a)
#endif

namespace hands3c {
namespace cpu {

namespace {

namespace hm = hands3c::math;

constexpr int64_t kG = 16;             // rows per tile (at most)
constexpr int64_t kTilesPerBlock = 4;  // tiles per weight-gradient partial

// Offsets of every row (all dimensions but the last) of a strided tensor.
std::vector<int64_t> row_offsets(const at::Tensor& t) {
  const int64_t nd = t.dim();
  const int64_t rows = t.numel() / t.size(nd - 1);
  std::vector<int64_t> off(rows);
  std::vector<int64_t> idx(nd > 1 ? nd - 1 : 1, 0);
  int64_t cur = 0;
  for (int64_t r = 0; r < rows; ++r) {
    off[r] = cur;
    for (int64_t d = nd - 2; d >= 0; --d) {  // odometer increment over the leading dims
      idx[d]++;
      cur += t.stride(d);
      if (idx[d] < t.size(d)) break;
      cur -= t.stride(d) * t.size(d);
      idx[d] = 0;
    }
  }
  return off;
}

// A strided (rows x C) operand: row r, channel c at base[off[r] + c * sc].
template <typename T>
struct Rows {
  const T* base;
  const int64_t* off;
  int64_t sc;
};

// tile[j*C + c] = src(rows[j], c) as float, j < g.  Unit-stride channels: copy row by row.
// Otherwise channel outer, row inner: the rows of a tile are usually adjacent in memory
// (y_spatial's width), so each channel reads one short contiguous run.
template <typename T>
inline void gather_tile(const Rows<T>& src, const int64_t* rows, int64_t g, int64_t C, float* tile) {
  if (src.sc == 1) {
    for (int64_t j = 0; j < g; ++j) {
      const T* s = src.base + src.off[rows[j]];
      float* t = tile + j * C;
      HS3C_SIMD
      for (int64_t c = 0; c < C; ++c) t[c] = static_cast<float>(s[c]);
    }
  } else {
    int64_t off[kG];
    for (int64_t j = 0; j < g; ++j) off[j] = src.off[rows[j]];
    for (int64_t c = 0; c < C; ++c) {
      const T* s = src.base + c * src.sc;
      for (int64_t j = 0; j < g; ++j) tile[j * C + c] = static_cast<float>(s[off[j]]);
    }
  }
}

// The rows (row-major ids over all dimensions but the last) in processing order, cut into
// tiles: tile t is rows[start[t] .. start[t+1]).  With row dimensions (..., H, W), W >= 8, a
// tile is up to kG consecutive w at one h, and one block of w is visited for every h before the
// next: the channel branch's layout (adjacent along h) then finds the cache lines it gathered
// for one tile again in the next instead of after a whole image row of tiles.  Otherwise
// tiles are kG consecutive rows.  The plan depends on the shape only (so does the backward's
// reduction order).
struct TilePlan {
  std::vector<int64_t> rows, start;
  int64_t ntiles() const { return static_cast<int64_t>(start.size()) - 1; }
};

TilePlan plan_tiles(const at::Tensor& t, int64_t M) {
  TilePlan p;
  p.rows.reserve(M);
  p.start.push_back(0);
  const int64_t nd = t.dim();
  const int64_t W = nd >= 3 ? t.size(nd - 2) : 1, H = nd >= 3 ? t.size(nd - 3) : 1;
  if (nd >= 3 && W >= 8) {
    const int64_t outer = M / (H * W);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t w0 = 0; w0 < W; w0 += kG) {
        const int64_t g = std::min(kG, W - w0);
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t j = 0; j < g; ++j) p.rows.push_back((o * H + h) * W + w0 + j);
          p.start.push_back(static_cast<int64_t>(p.rows.size()));
        }
      }
  } else {
    for (int64_t r = 0; r < M; ++r) {
      p.rows.push_back(r);
      if ((r + 1) % kG == 0 || r + 1 == M) p.start.push_back(r + 1);
    }
  }
  return p;
}

// Loads tile t of the plan for forward and backward alike: x = y_spatial + y_channel into xs
// (xc is scratch) and z: zrow[j] points at row j's z as float, either the tensor's own row
// (float32 z with unit channel stride: no copy) or a row of zt.  Each (g x C).  Returns g;
// *rows points at the tile's row ids.  Rows whose channels are contiguous (the S3C block's
// layout since the scans write (B, H, W, d_inner)) are summed straight from the tensors.
template <typename T>
int64_t load_tile(const TilePlan& plan, int64_t t, const Rows<float>& S, const Rows<float>& Ch, const Rows<T>& Z,
                  int64_t C, float* xs, float* xc, float* zt, const float** zrow, const int64_t** rows) {
  *rows = plan.rows.data() + plan.start[t];
  const int64_t g = plan.start[t + 1] - plan.start[t];
  if (S.sc == 1 && Ch.sc == 1) {
    for (int64_t j = 0; j < g; ++j) {
      const float* a = S.base + S.off[(*rows)[j]];
      const float* b = Ch.base + Ch.off[(*rows)[j]];
      float* x = xs + j * C;
      HS3C_SIMD
      for (int64_t c = 0; c < C; ++c) x[c] = a[c] + b[c];
    }
  } else {
    gather_tile(S, *rows, g, C, xs);
    gather_tile(Ch, *rows, g, C, xc);
    HS3C_SIMD
    for (int64_t i = 0; i < g * C; ++i) xs[i] += xc[i];
  }
  if constexpr (std::is_same_v<T, float>) {
    if (Z.sc == 1) {
      for (int64_t j = 0; j < g; ++j) zrow[j] = Z.base + Z.off[(*rows)[j]];
      return g;
    }
  }
  gather_tile(Z, *rows, g, C, zt);
  for (int64_t j = 0; j < g; ++j) zrow[j] = zt + j * C;
  return g;
}

// One row of the forward: x = y_spatial + y_channel -> out, mean, rstd.
HS3C_MERGE_CLONES
void merge_row_fwd(const float* x, const float* z, const float* w, const float* b, int64_t C, float eps,
                   float* out, float* mean, float* rstd) {
  double sum = 0.0;
  HS3C_SIMD_SUM1(sum)
  for (int64_t c = 0; c < C; ++c) sum += x[c];
  const float mu = static_cast<float>(sum / C);
  double var = 0.0;
  HS3C_SIMD_SUM1(var)
  for (int64_t c = 0; c < C; ++c) {
    const float d = x[c] - mu;
    var += static_cast<double>(d) * d;
  }
  const float rs = 1.0f / std::sqrt(static_cast<float>(var / C) + eps);
  *mean = mu;
  *rstd = rs;
  HS3C_SIMD
  for (int64_t c = 0; c < C; ++c) out[c] = hm::merge_apply(x[c], mu, rs, w[c], b[c], z[c]);
}

// x = a + b over one row, with AVX-512 where the machine has it (the strided path's
// load_tile runs at the baseline ISA; here the row is summed where it is used).
HS3C_MERGE_CLONES
void add_row(const float* a, const float* b, int64_t C, float* x) {
  HS3C_SIMD
  for (int64_t c = 0; c < C; ++c) x[c] = a[c] + b[c];
}

// Asks for the cache lines of one row of C floats.
inline void prefetch_row(const float* p, int64_t C) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < C * static_cast<int64_t>(sizeof(float)); off += 64) __builtin_prefetch(c + off);
}

// The forward when every row lies in place (unit channel stride, float32 z: the S3C block's
// layout): one pass over memory in row order, x summed into one L1-resident row, the next
// row's lines requested while this one is computed.  The forward's rows are independent and
// merge_row_fwd is the strided path's own row code, so the result is the same bit for bit.
// Returns false (nothing done) for any other layout or z dtype.
template <typename T>
bool fwd_rows_in_place(const Rows<float>& S, const Rows<float>& Ch, const Rows<T>& Z, int64_t M, int64_t C,
                       const float* w, const float* b, float eps, float* out, float* mean, float* rstd) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (S.sc != 1 || Ch.sc != 1 || Z.sc != 1) return false;
    at::parallel_for(0, M, 16, [&](int64_t r0, int64_t r1) {
      std::vector<float> xrow(C);
      float* x = xrow.data();
      for (int64_t r = r0; r < r1; ++r) {
        if (r + 1 < r1) {
          prefetch_row(S.base + S.off[r + 1], C);
          prefetch_row(Ch.base + Ch.off[r + 1], C);
          prefetch_row(Z.base + Z.off[r + 1], C);
        }
        add_row(S.base + S.off[r], Ch.base + Ch.off[r], C, x);
        merge_row_fwd(x, Z.base + Z.off[r], w, b, C, eps, out + r * C, mean + r, rstd + r);
      }
    });
    return true;
  }
}

// Row r of a float32 operand with unit channel stride, in place; nullptr for any other
// dtype or stride.
template <typename T>
inline const float* float_row(const Rows<T>& Z, int64_t r) {
  if constexpr (std::is_same_v<T, float>) {
    return Z.sc == 1 ? Z.base + Z.off[r] : nullptr;
  } else {
    return nullptr;
  }
}

// One row of the backward.  x: y_spatial + y_channel; go: dL/dout.  Writes dy (the gradient of
// both branch inputs), dz (float), and adds this row's terms to the weight/bias partials.
HS3C_MERGE_CLONES
void merge_row_bwd(const float* x, const float* z, const float* go, const float* w, const float* b, int64_t C,
                   float mu, float rs, float* xh, float* dxh, float* dy, float* dz, float* dw, float* db) {
  float s1 = 0.f, s2 = 0.f;
  HS3C_SIMD_SUM2(s1, s2)
  for (int64_t c = 0; c < C; ++c) {
    const float h = (x[c] - mu) * rs;
    xh[c] = h;
    const float ln = h * w[c] + b[c];
    // silu and its derivative from one sigmoid (hm::silu_f / silu_grad_f would take two exps)
    const float sg = hm::sigmoid_f(z[c]);
    dz[c] = go[c] * ln * (sg * (1.0f + z[c] * (1.0f - sg)));
    const float dln = go[c] * (z[c] * sg);  // gradient of the LayerNorm output
    dw[c] += dln * h;
    db[c] += dln;
    const float d = dln * w[c];
    dxh[c] = d;
    s1 += d;
    s2 += d * h;
  }
  const float inv = 1.0f / static_cast<float>(C);
  const float m1 = inv * s1, m2 = inv * s2;
  HS3C_SIMD
  for (int64_t c = 0; c < C; ++c) dy[c] = rs * (dxh[c] - m1 - xh[c] * m2);
}

void check_inputs(const char* op, const at::Tensor& ys, const at::Tensor& yc, const at::Tensor& z,
                  const at::Tensor& w) {
  TORCH_CHECK(ys.device().is_cpu() && yc.device().is_cpu() && z.device().is_cpu() && w.device().is_cpu(),
              op, ": all tensors must be CPU tensors");
  TORCH_CHECK(ys.scalar_type() == at::kFloat && yc.scalar_type() == at::kFloat, op,
              ": y_spatial and y_channel must be float32");
  TORCH_CHECK(ys.sizes() == yc.sizes() && ys.sizes() == z.sizes(), op,
              ": y_spatial, y_channel and z must have the same shape");
  TORCH_CHECK(ys.dim() >= 1 && w.dim() == 1 && w.size(0) == ys.size(-1), op,
              ": weight must have shape (C,) with C the last dimension of y_spatial");
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> s3c_merge_fwd(const Tensor& y_spatial, const Tensor& y_channel,
                                                 const Tensor& z, const Tensor& weight, const Tensor& bias,
                                                 double eps) {
  check_inputs("s3c_merge_fwd", y_spatial, y_channel, z, weight);
  const int64_t C = y_spatial.size(-1);
  const int64_t M = C == 0 ? 0 : y_spatial.numel() / C;
  auto out = at::empty(y_spatial.sizes(), y_spatial.options().memory_format(at::MemoryFormat::Contiguous));
  auto mean = at::empty({M}, y_spatial.options());
  auto rstd = at::empty({M}, y_spatial.options());
  if (M == 0) return {out, mean, rstd};
  const auto offs = row_offsets(y_spatial), offc = row_offsets(y_channel), offz = row_offsets(z);
  const Rows<float> S{y_spatial.data_ptr<float>(), offs.data(), y_spatial.stride(-1)};
  const Rows<float> Ch{y_channel.data_ptr<float>(), offc.data(), y_channel.stride(-1)};
  const auto wc = weight.contiguous(), bc = bias.contiguous();
  const float* pw = wc.data_ptr<float>();
  const float* pb = bc.data_ptr<float>();
  float* po = out.data_ptr<float>();
  float* pm = mean.data_ptr<float>();
  float* pr = rstd.data_ptr<float>();
  const float feps = static_cast<float>(eps);
  const TilePlan plan = plan_tiles(y_spatial, M);
  const int64_t ntiles = plan.ntiles();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "s3c_merge_fwd", [&] {
    const Rows<scalar_t> Z{z.data_ptr<scalar_t>(), offz.data(), z.stride(-1)};
    if (fwd_rows_in_place(S, Ch, Z, M, C, pw, pb, feps, po, pm, pr)) return;
    at::parallel_for(0, ntiles, 4, [&](int64_t t0, int64_t t1) {
      std::vector<float> buf(3 * kG * C);
      float *xs = buf.data(), *xc = xs + kG * C, *zt = xc + kG * C;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t* rows;
        const float* zrow[kG];
        const int64_t g = load_tile(plan, t, S, Ch, Z, C, xs, xc, zt, zrow, &rows);
        for (int64_t j = 0; j < g; ++j) {
          const int64_t r = rows[j];
          merge_row_fwd(xs + j * C, zrow[j], pw, pb, C, feps, po + r * C, pm + r, pr + r);
        }
      }
    });
  });
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> s3c_merge_bwd(const Tensor& dout, const Tensor& y_spatial,
                                                         const Tensor& y_channel, const Tensor& z,
                                                         const Tensor& weight, const Tensor& bias,
                                                         const Tensor& mean, const Tensor& rstd) {
  check_inputs("s3c_merge_bwd", y_spatial, y_channel, z, weight);
  TORCH_CHECK(dout.sizes() == y_spatial.sizes(), "s3c_merge_bwd: dout must have y_spatial's shape");
  const int64_t C = y_spatial.size(-1);
  const int64_t M = C == 0 ? 0 : y_spatial.numel() / C;
  const auto contig = y_spatial.options().memory_format(at::MemoryFormat::Contiguous);
  auto dy = at::empty(y_spatial.sizes(), contig);
  auto dz = at::empty(z.sizes(), z.options().memory_format(at::MemoryFormat::Contiguous));
  const TilePlan plan = plan_tiles(y_spatial, M);
  const int64_t ntiles = plan.ntiles();
  const int64_t nblocks = (ntiles + kTilesPerBlock - 1) / kTilesPerBlock;
  auto partial = at::zeros({nblocks, 2, C}, y_spatial.options());
  auto dweight = at::zeros({C}, y_spatial.options());
  auto dbias = at::zeros({C}, y_spatial.options());
  if (M == 0) return {dy, dz, dweight, dbias};
  const auto do_c = dout.to(at::kFloat).contiguous();
  const auto offs = row_offsets(y_spatial), offc = row_offsets(y_channel), offz = row_offsets(z);
  const Rows<float> S{y_spatial.data_ptr<float>(), offs.data(), y_spatial.stride(-1)};
  const Rows<float> Ch{y_channel.data_ptr<float>(), offc.data(), y_channel.stride(-1)};
  const float* pd = do_c.data_ptr<float>();
  const auto wc = weight.contiguous(), bc = bias.contiguous();
  const float* pw = wc.data_ptr<float>();
  const float* pb = bc.data_ptr<float>();
  const auto mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const float* pm = mean_c.data_ptr<float>();
  const float* pr = rstd_c.data_ptr<float>();
  float* pdy = dy.data_ptr<float>();
  float* ppart = partial.data_ptr<float>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "s3c_merge_bwd", [&] {
    const Rows<scalar_t> Z{z.data_ptr<scalar_t>(), offz.data(), z.stride(-1)};
    scalar_t* pdz = dz.data_ptr<scalar_t>();
    // Every operand's rows in place (the S3C block's layout): each row's x is summed into one
    // L1-resident row right before it is used and the plan's next row is requested meanwhile,
    // instead of staging a 16-row tile (32 KiB at C = 512) that leaves L1 before its last row is
    // read.  Same rows in the same order, same row code: the same result bit for bit.
    const bool in_place = S.sc == 1 && Ch.sc == 1 && float_row(Z, 0) != nullptr;
    at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> buf(3 * kG * C + 3 * C);
      float *xs = buf.data(), *xc = xs + kG * C, *zt = xc + kG * C;
      float *xh = zt + kG * C, *dxh = xh + C, *dzrow = dxh + C;  // per-row scratch
      for (int64_t blk = b0; blk < b1; ++blk) {
        float* dw = ppart + blk * 2 * C;
        float* db = dw + C;
        const int64_t tend = std::min(ntiles, (blk + 1) * kTilesPerBlock);
        for (int64_t t = blk * kTilesPerBlock; t < tend; ++t) {
          if (in_place) {
            const int64_t* rows = plan.rows.data() + plan.start[t];
            const int64_t g = plan.start[t + 1] - plan.start[t];
            for (int64_t j = 0; j < g; ++j) {
              const int64_t r = rows[j];
              if (j + 1 < g) {
                const int64_t n = rows[j + 1];
                prefetch_row(S.base + S.off[n], C);
                prefetch_row(Ch.base + Ch.off[n], C);
                prefetch_row(float_row(Z, n), C);
                prefetch_row(pd + n * C, C);
              }
              add_row(S.base + S.off[r], Ch.base + Ch.off[r], C, xs);
              merge_row_bwd(xs, float_row(Z, r), pd + r * C, pw, pb, C, pm[r], pr[r], xh, dxh, pdy + r * C,
                            reinterpret_cast<float*>(pdz) + r * C, dw, db);
            }
            continue;
          }
          const int64_t* rows;
          const float* zrow[kG];
          const int64_t g = load_tile(plan, t, S, Ch, Z, C, xs, xc, zt, zrow, &rows);
          for (int64_t j = 0; j < g; ++j) {
            const float* x = xs + j * C;
            const int64_t r = rows[j];
            // float z: dz is written in place; half/bfloat16: through a float row, then converted
            float* dzf = std::is_same_v<scalar_t, float> ? reinterpret_cast<float*>(pdz) + r * C : dzrow;
            merge_row_bwd(x, zrow[j], pd + r * C, pw, pb, C, pm[r], pr[r], xh, dxh, pdy + r * C, dzf, dw, db);
            if constexpr (!std::is_same_v<scalar_t, float>) {
              scalar_t* o = pdz + r * C;
              for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(dzf[c]);
            }
          }
        }
      }
    });
  });
  float* pdw = dweight.data_ptr<float>();
  float* pdb = dbias.data_ptr<float>();
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const float* part = ppart + blk * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      pdw[c] += part[c];
      pdb[c] += part[C + c];
    }
  }
  return {dy, dz, dweight, dbias};
}

}  // namespace cpu
}  // namespace hands3c
