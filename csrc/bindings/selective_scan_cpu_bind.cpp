// Registers the CPU kernels of hands3c::selective_scan_fwd / selective_scan_bwd
// (csrc/cpu/selective_scan_cpu.cpp), each behind the shared argument checks (hands3c/op_checks.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/cpu_ops.h"
#include "hands3c/op_checks.h"

namespace {

using at::Tensor;
using OptTensor = c10::optional<at::Tensor>;
namespace hc = hands3c::checks;

const hc::Target kCpu{c10::DeviceType::CPU, "CPU"};

std::tuple<Tensor, Tensor, Tensor> selective_scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                      const Tensor& B, const Tensor& C, const OptTensor& D,
                                                      const OptTensor& z, const OptTensor& delta_bias,
                                                      bool delta_softplus) {
  hc::selective_scan_fwd("hands3c::selective_scan_fwd", kCpu, u, delta, A, B, C, D, z, delta_bias);
  const hc::NoAutocast no_autocast;
  return hands3c::cpu::selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_bwd(
    const Tensor& dout, const OptTensor& dlast_state, const Tensor& u, const Tensor& delta, const Tensor& A,
    const Tensor& B, const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
    bool delta_softplus, const Tensor& checkpoints) {
  hc::selective_scan_bwd("hands3c::selective_scan_bwd", kCpu, dout, dlast_state, u, delta, A, B, C, D, z, delta_bias,
                         checkpoints);
  const hc::NoAutocast no_autocast;
  return hands3c::cpu::selective_scan_bwd(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                          checkpoints);
}

}  // namespace

TORCH_LIBRARY_IMPL(hands3c, CPU, m) {
  m.impl("selective_scan_fwd", &selective_scan_fwd);
  m.impl("selective_scan_bwd", &selective_scan_bwd);
}
