// CUDA kernels of hands3c::s3c_merge_fwd / s3c_merge_bwd (kernels in merge.cu).
// Contract: handS3C/ops/merge.py; argument checks: hands3c/op_checks.h.
#include <cmath>

#include "cuda/bind_common.h"

namespace hands3c {
namespace cuda {
namespace bind {

namespace {

constexpr const char* kFwd = "hands3c::s3c_merge_fwd";
constexpr const char* kBwd = "hands3c::s3c_merge_bwd";

// Rows of a (..., C) view addressed by decoding the row index over the leading dimensions,
// so permuted views need no copy.
RowView row_view(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() >= 1 && t.dim() <= 8, op, ": ", name, " must have 1 to 8 dimensions, got ", t.dim());
  RowView v;
  v.p = t.data_ptr();
  v.dtype = dtype_tag(t, op, name);
  v.nlead = (int)t.dim() - 1;
  for (int i = 0; i < v.nlead; ++i) {
    v.sizes[i] = t.size(i);
    v.strides[i] = t.stride(i);
  }
  v.sc = t.stride(-1);
  return v;
}

// Arguments already validated by checks::merge_fwd / merge_bwd (sizes in m).
MergeProblem prepare(const char* op, const Tensor& ys, const Tensor& yc, const Tensor& z, const Tensor& weight,
                     const Tensor& bias, const checks::MergeDims& m, Tensor& wc, Tensor& bc) {
  const int64_t C = m.C;
  wc = weight.contiguous();
  bc = bias.contiguous();
  MergeProblem mp;
  mp.C = C;
  mp.M = m.M;
  mp.ys = row_view(ys, op, "y_spatial");
  mp.yc = row_view(yc, op, "y_channel");
  mp.z = row_view(z, op, "z");
  mp.weight = wc.data_ptr<float>();
  mp.bias = bc.data_ptr<float>();
  return mp;
}

std::tuple<Tensor, Tensor, Tensor> s3c_merge_fwd(const Tensor& y_spatial, const Tensor& y_channel, const Tensor& z,
                                                 const Tensor& weight, const Tensor& bias, double eps) {
  const checks::MergeDims m = checks::merge_fwd(kFwd, kTarget, y_spatial, y_channel, z, weight, bias, eps);
  const checks::NoAutocast no_autocast;
  DeviceGuard guard(y_spatial);
  Tensor wc, bc;
  MergeProblem mp = prepare(kFwd, y_spatial, y_channel, z, weight, bias, m, wc, bc);
  mp.eps = static_cast<float>(eps);
  Tensor out = empty_f32(y_spatial.sizes(), y_spatial);
  Tensor mean = empty_f32({mp.M}, y_spatial);
  Tensor rstd = empty_f32({mp.M}, y_spatial);
  for (Tensor* t : {&out, &mean, &rstd}) poison(*t);
  check_launch(merge_forward(mp, out.data_ptr<float>(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
                             current_stream(y_spatial)));
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> s3c_merge_bwd(const Tensor& dout, const Tensor& y_spatial,
                                                         const Tensor& y_channel, const Tensor& z,
                                                         const Tensor& weight, const Tensor& bias,
                                                         const Tensor& mean, const Tensor& rstd) {
  const checks::MergeDims m =
      checks::merge_bwd(kBwd, kTarget, dout, y_spatial, y_channel, z, weight, bias, mean, rstd);
  const checks::NoAutocast no_autocast;
  DeviceGuard guard(y_spatial);
  Tensor wc, bc;
  const MergeProblem mp = prepare(kBwd, y_spatial, y_channel, z, weight, bias, m, wc, bc);
  const size_t need = merge_bwd_smem_bytes(mp), have = device_max_smem_optin(device_index(y_spatial));
  TORCH_CHECK(need <= have, kBwd, ": rows of C=", mp.C, " values need ", need,
              " bytes of shared memory per block, the device allows ", have);
  const Tensor dout_c = dout.to(at::kFloat).contiguous();
  const Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  Tensor dy = empty_f32(y_spatial.sizes(), y_spatial);
  Tensor dz = at::empty(z.sizes(), z.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor dweight = empty_f32({mp.C}, y_spatial);
  Tensor dbias = empty_f32({mp.C}, y_spatial);
  for (Tensor* t : {&dy, &dz, &dweight, &dbias}) poison(*t);
  if (mp.M == 0) {
    dweight.zero_();
    dbias.zero_();
    return {dy, dz, dweight, dbias};
  }
  Tensor ws = empty_f32({merge_bwd_workspace(mp)}, y_spatial);
  check_launch(merge_backward(mp, dout_c.data_ptr<float>(), mean_c.data_ptr<float>(), rstd_c.data_ptr<float>(),
                              dy.data_ptr<float>(), dz.data_ptr(), dtype_tag(dz, kBwd, "dz"), dweight.data_ptr<float>(),
                              dbias.data_ptr<float>(), ws.data_ptr<float>(), current_stream(y_spatial)));
  return {dy, dz, dweight, dbias};
}

}  // namespace

}  // namespace bind
}  // namespace cuda
}  // namespace hands3c

TORCH_LIBRARY_IMPL(HS3C_BIND_LIB, HS3C_BIND_KEY, m) {
  m.impl("s3c_merge_fwd", &hands3c::cuda::bind::s3c_merge_fwd);
  m.impl("s3c_merge_bwd", &hands3c::cuda::bind::s3c_merge_bwd);
}
