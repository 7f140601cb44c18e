// Registers the CPU kernels of hands3c::cross_scan_fwd / cross_scan_bwd (csrc/cpu/cross_scan_cpu.cpp),
// each behind the shared argument checks (hands3c/op_checks.h) so no input reaches a kernel
// that it could make read or write out of bounds.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/cpu_ops.h"
#include "hands3c/op_checks.h"

namespace {

using at::Tensor;
namespace hc = hands3c::checks;

const hc::Target kCpu{c10::DeviceType::CPU, "CPU"};

// Half-precision u / dout are read as float32 (the operator's contract, as on CUDA).
Tensor as_f32(const Tensor& t) { return t.scalar_type() == at::kFloat ? t : t.to(at::kFloat); }

std::tuple<Tensor, Tensor, Tensor> cross_scan_fwd(const Tensor& u, const Tensor& x_proj_weight,
                                                  const Tensor& dt_projs_weight, const Tensor& dt_projs_bias,
                                                  const Tensor& A_logs, const Tensor& Ds,
                                                  at::OptionalIntArrayRef out_order) {
  constexpr const char* op = "hands3c::cross_scan_fwd";
  hc::cross_scan_fwd(op, kCpu, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds);
  const auto order = hc::cross_scan_out_order(op, out_order);
  const hc::NoAutocast no_autocast;
  return hands3c::cpu::cross_scan_fwd(as_f32(u), x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, order);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cross_scan_bwd(
    const Tensor& dout, const Tensor& u, const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
    const Tensor& dt_projs_bias, const Tensor& A_logs, const Tensor& Ds, const Tensor& dbl,
    const Tensor& checkpoints) {
  hc::cross_scan_bwd("hands3c::cross_scan_bwd", kCpu, dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs,
                     Ds, dbl, checkpoints);
  const hc::NoAutocast no_autocast;
  return hands3c::cpu::cross_scan_bwd(as_f32(dout), as_f32(u), x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs,
                                      Ds, dbl, checkpoints);
}

}  // namespace

TORCH_LIBRARY_IMPL(hands3c, CPU, m) {
  m.impl("cross_scan_fwd", &cross_scan_fwd);
  m.impl("cross_scan_bwd", &cross_scan_bwd);
}
