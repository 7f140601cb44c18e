// CPU kernel entry points.  Argument and result conventions are the operator contracts
// documented in handS3C/ops/*.py; the bindings in csrc/bindings/ register them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>
#include <tuple>

namespace hands3c {
namespace cpu {

using at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

// out_order: y's memory order, a permutation validated by checks::cross_scan_out_order.
std::tuple<Tensor, Tensor, Tensor> cross_scan_fwd(const Tensor& u, const Tensor& x_proj_weight,
                                                  const Tensor& dt_projs_weight, const Tensor& dt_projs_bias,
                                                  const Tensor& A_logs, const Tensor& Ds, at::IntArrayRef out_order);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cross_scan_bwd(
    const Tensor& dout, const Tensor& u, const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
    const Tensor& dt_projs_bias, const Tensor& A_logs, const Tensor& Ds, const Tensor& dbl,
    const Tensor& checkpoints);

std::tuple<Tensor, Tensor, Tensor> selective_scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                      const Tensor& B, const Tensor& C, const OptTensor& D,
                                                      const OptTensor& z, const OptTensor& delta_bias,
                                                      bool delta_softplus);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_bwd(
    const Tensor& dout, const OptTensor& dlast_state, const Tensor& u, const Tensor& delta, const Tensor& A,
    const Tensor& B, const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
    bool delta_softplus, const Tensor& checkpoints);

std::tuple<Tensor, Tensor, Tensor> s3c_merge_fwd(const Tensor& y_spatial, const Tensor& y_channel,
                                                 const Tensor& z, const Tensor& weight, const Tensor& bias,
                                                 double eps);

std::tuple<Tensor, Tensor, Tensor, Tensor> s3c_merge_bwd(const Tensor& dout, const Tensor& y_spatial,
                                                         const Tensor& y_channel, const Tensor& z,
                                                         const Tensor& weight, const Tensor& bias,
                                                         const Tensor& mean, const Tensor& rstd);

// Benchmark helpers: the compute bound of the scan's inner loop (state updates per second on
// all threads, no memory traffic) and the instruction set the kernels dispatch to.
double state_update_peak_rate(int64_t steps);
// The processor's bound for the same work: fma_peak_rate is the FMA issue rate of the selected
// build (FMAs of 16 floats per second on all threads, no memory traffic; on the SSE2 baseline,
// which has no FMA, multiplies and adds of 16 floats), state_update_vector_ops
// the FMA-equivalent vector operations per state update of 16 lanes in the forward's inner loop
// (counted from its compiled code, cross_scan_kernel.h).  Processor bound in state updates per
// second = fma_peak_rate * 16 / state_update_vector_ops.
double fma_peak_rate(int64_t steps);
// The backward's own bound: its two inner loops (state recomputation and adjoint step) with
// L1-resident inputs on all threads, in backward state updates per second.
double backward_update_peak_rate(int64_t steps);
int64_t state_update_vector_ops();
std::string cpu_isa_name();

}  // namespace cpu
}  // namespace hands3c
