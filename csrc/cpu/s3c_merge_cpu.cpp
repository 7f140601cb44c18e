// CPU kernel of the S3C merge: out = LayerNorm(y_spatial + y_channel) * silu(z) over the
// last dimension, forward and backward, one pass over each row.
//
// Inputs may be strided views (the block passes permuted branch outputs); rows whose channel
// stride is not 1 are made contiguous first, other layouts are addressed row by row.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "cpu/cpu_ops.h"
#include "hands3c/scan_math.h"

namespace hands3c {
namespace cpu {

namespace {

namespace hm = hands3c::math;

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

template <typename T>
inline void gather_row(const T* base, int64_t stride, int64_t C, float* dst) {
  if (stride == 1) {
    for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<float>(base[c]);
  } else {
    for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<float>(base[c * stride]);
  }
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

// Permuted views (channel stride != 1) are copied once with ATen's parallel copy kernels, which
// beats gathering each row element by element across the whole plane.
at::Tensor rows_contiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

std::tuple<Tensor, Tensor, Tensor> s3c_merge_fwd(const Tensor& y_spatial_in, const Tensor& y_channel_in,
                                                 const Tensor& z_in, const Tensor& weight, const Tensor& bias,
                                                 double eps) {
  check_inputs("s3c_merge_fwd", y_spatial_in, y_channel_in, z_in, weight);
  const auto y_spatial = rows_contiguous(y_spatial_in), y_channel = rows_contiguous(y_channel_in);
  const auto z = rows_contiguous(z_in);
  const int64_t C = y_spatial.size(-1);
  const int64_t M = y_spatial.numel() / C;
  auto out = at::empty(y_spatial.sizes(), y_spatial.options());
  auto mean = at::empty({M}, y_spatial.options());
  auto rstd = at::empty({M}, y_spatial.options());
  const auto offs = row_offsets(y_spatial), offc = row_offsets(y_channel), offz = row_offsets(z);
  const int64_t ss = y_spatial.stride(-1), sc = y_channel.stride(-1), sz = z.stride(-1);
  const float* ps = y_spatial.data_ptr<float>();
  const float* pc = y_channel.data_ptr<float>();
  const auto wc = weight.contiguous(), bc = bias.contiguous();
  const float* pw = wc.data_ptr<float>();
  const float* pb = bc.data_ptr<float>();
  float* po = out.data_ptr<float>();
  float* pm = mean.data_ptr<float>();
  float* pr = rstd.data_ptr<float>();
  const float feps = static_cast<float>(eps);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "s3c_merge_fwd", [&] {
    const scalar_t* pz = z.data_ptr<scalar_t>();
    at::parallel_for(0, M, 16, [&](int64_t r0, int64_t r1) {
      std::vector<float> x(C), g(C);
      for (int64_t r = r0; r < r1; ++r) {
        gather_row(ps + offs[r], ss, C, x.data());
        gather_row(pz + offz[r], sz, C, g.data());
        const float* yc = pc + offc[r];
        double sum = 0.0;  // double accumulation keeps long rows exact to float rounding
        for (int64_t c = 0; c < C; ++c) {
          x[c] += yc[c * sc];
          sum += x[c];
        }
        const float mu = static_cast<float>(sum / C);
        double var = 0.0;
        for (int64_t c = 0; c < C; ++c) {
          const float d = x[c] - mu;
          var += static_cast<double>(d) * d;
        }
        const float rs = 1.0f / std::sqrt(static_cast<float>(var / C) + feps);
        pm[r] = mu;
        pr[r] = rs;
        float* o = po + r * C;
HS3C_SIMD
        for (int64_t c = 0; c < C; ++c) o[c] = hm::merge_apply(x[c], mu, rs, pw[c], pb[c], g[c]);
      }
    });
  });
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> s3c_merge_bwd(const Tensor& dout, const Tensor& y_spatial_in,
                                                         const Tensor& y_channel_in, const Tensor& z_in,
                                                         const Tensor& weight, const Tensor& bias,
                                                         const Tensor& mean, const Tensor& rstd) {
  check_inputs("s3c_merge_bwd", y_spatial_in, y_channel_in, z_in, weight);
  const auto y_spatial = rows_contiguous(y_spatial_in), y_channel = rows_contiguous(y_channel_in);
  const auto z = rows_contiguous(z_in);
  TORCH_CHECK(dout.sizes() == y_spatial.sizes(), "s3c_merge_bwd: dout must have y_spatial's shape");
  const int64_t C = y_spatial.size(-1);
  const int64_t M = y_spatial.numel() / C;
  auto dy = at::empty(y_spatial.sizes(), y_spatial.options());
  auto dz = at::empty(z.sizes(), z.options().memory_format(at::MemoryFormat::Contiguous));
  // Weight/bias gradients are reduced over rows: each fixed block of rows writes its own
  // partial and the partials are summed in block order, so the result does not depend on
  // the thread count.
  constexpr int64_t kRowsPerBlock = 64;
  const int64_t nblocks = (M + kRowsPerBlock - 1) / kRowsPerBlock;
  auto partial = at::zeros({nblocks, 2, C}, y_spatial.options());
  const auto do_c = dout.to(at::kFloat).contiguous();
  const auto offs = row_offsets(y_spatial), offc = row_offsets(y_channel), offz = row_offsets(z);
  const int64_t ss = y_spatial.stride(-1), sc = y_channel.stride(-1), sz = z.stride(-1);
  const float* ps = y_spatial.data_ptr<float>();
  const float* pc = y_channel.data_ptr<float>();
  const float* pd = do_c.data_ptr<float>();
  const auto wc = weight.contiguous(), bc = bias.contiguous();
  const float* pw = wc.data_ptr<float>();
  const float* pb = bc.data_ptr<float>();
  const float* pm = mean.data_ptr<float>();
  const float* pr = rstd.data_ptr<float>();
  float* pdy = dy.data_ptr<float>();
  float* ppart = partial.data_ptr<float>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "s3c_merge_bwd", [&] {
    const scalar_t* pz = z.data_ptr<scalar_t>();
    scalar_t* pdz = dz.data_ptr<scalar_t>();
    at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> xhat(C), g(C), dxh(C);
      for (int64_t blk = b0; blk < b1; ++blk) {
        float* dw = ppart + blk * 2 * C;
        float* db = dw + C;
        const int64_t rend = std::min(M, (blk + 1) * kRowsPerBlock);
        for (int64_t r = blk * kRowsPerBlock; r < rend; ++r) {
          gather_row(ps + offs[r], ss, C, xhat.data());
          gather_row(pz + offz[r], sz, C, g.data());
          const float* yc = pc + offc[r];
          const float* go = pd + r * C;
          const float mu = pm[r], rs = pr[r];
          float s1 = 0.f, s2 = 0.f;
          scalar_t* dzr = pdz + r * C;
          for (int64_t c = 0; c < C; ++c) {
            const float xh = (xhat[c] + yc[c * sc] - mu) * rs;
            xhat[c] = xh;
            const float ln = xh * pw[c] + pb[c];
            dzr[c] = static_cast<scalar_t>(go[c] * ln * hm::silu_grad_f(g[c]));
            const float dln = go[c] * hm::silu_f(g[c]);  // gradient of the LayerNorm output
            dw[c] += dln * xh;
            db[c] += dln;
            const float d = dln * pw[c];
            dxh[c] = d;
            s1 += d;
            s2 += d * xh;
          }
          const float inv = 1.0f / static_cast<float>(C);
          float* dyr = pdy + r * C;
HS3C_SIMD
          for (int64_t c = 0; c < C; ++c) dyr[c] = rs * (dxh[c] - inv * s1 - xhat[c] * (inv * s2));
        }
      }
    });
  });
  auto dweight = at::zeros({C}, y_spatial.options());
  auto dbias = at::zeros({C}, y_spatial.options());
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
