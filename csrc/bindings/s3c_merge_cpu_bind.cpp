// Registers the CPU kernels of hands3c::s3c_merge_fwd / s3c_merge_bwd (csrc/cpu/s3c_merge_cpu.cpp),
// each behind the shared argument checks (hands3c/op_checks.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/cpu_ops.h"
#include "hands3c/op_checks.h"

namespace {

using at::Tensor;
namespace hc = hands3c::checks;

const hc::Target kCpu{c10::DeviceType::CPU, "CPU"};

std::tuple<Tensor, Tensor, Tensor> s3c_merge_fwd(const Tensor& y_spatial, const Tensor& y_channel, const Tensor& z,
                                                 const Tensor& weight, const Tensor& bias, double eps) {
  hc::merge_fwd("hands3c::s3c_merge_fwd", kCpu, y_spatial, y_channel, z, weight, bias, eps);
  const hc::NoAutocast no_autocast;
  return hands3c::cpu::s3c_merge_fwd(y_spatial, y_channel, z, weight, bias, eps);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> s3c_merge_bwd(const Tensor& dout, const Tensor& y_spatial,
                                                         const Tensor& y_channel, const Tensor& z,
                                                         const Tensor& weight, const Tensor& bias,
                                                         const Tensor& mean, const Tensor& rstd) {
  hc::merge_bwd("hands3c::s3c_merge_bwd", kCpu, dout, y_spatial, y_channel, z, weight, bias, mean, rstd);
  const hc::NoAutocast no_autocast;
  return hands3c::cpu::s3c_merge_bwd(dout, y_spatial, y_channel, z, weight, bias, mean, rstd);
}

}  // namespace

TORCH_LIBRARY_IMPL(hands3c, CPU, m) {
  m.impl("s3c_merge_fwd", &s3c_merge_fwd);
  m.impl("s3c_merge_bwd", &s3c_merge_bwd);
}
