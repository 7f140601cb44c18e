// Operator schemas of the `hands3c` namespace.  Defined once here (in the CPU extension,
// which is always built); the CPU and CUDA kernels are registered in separate files.
#include <torch/library.h>

#include "cpu/cpu_ops.h"

TORCH_LIBRARY(hands3c, m) {
  // out_order: the memory order of y's (B, D, P, Q) dimensions (None: contiguous); see
  // handS3C/ops/cross_scan.py.  The backward reads dout through its strides, whatever they are.
  m.def("cross_scan_fwd(Tensor u, Tensor x_proj_weight, Tensor dt_projs_weight, Tensor dt_projs_bias, "
        "Tensor A_logs, Tensor Ds, int[]? out_order=None) -> (Tensor, Tensor, Tensor)");
  m.def("cross_scan_bwd(Tensor dout, Tensor u, Tensor x_proj_weight, Tensor dt_projs_weight, "
        "Tensor dt_projs_bias, Tensor A_logs, Tensor Ds, Tensor dbl, Tensor checkpoints) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
        "Tensor? delta_bias, bool delta_softplus) -> (Tensor, Tensor, Tensor)");
  m.def("selective_scan_bwd(Tensor dout, Tensor? dlast_state, Tensor u, Tensor delta, Tensor A, Tensor B, "
        "Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, bool delta_softplus, Tensor checkpoints) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("s3c_merge_fwd(Tensor y_spatial, Tensor y_channel, Tensor z, Tensor weight, Tensor bias, float eps) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("s3c_merge_bwd(Tensor dout, Tensor y_spatial, Tensor y_channel, Tensor z, Tensor weight, "
        "Tensor bias, Tensor mean, Tensor rstd) -> (Tensor, Tensor, Tensor, Tensor)");
  // Benchmark helpers (CPU only, no tensors): see csrc/cpu/cpu_ops.h.
  m.def("state_update_peak_rate(int steps) -> float", &hands3c::cpu::state_update_peak_rate);
  m.def("fma_peak_rate(int steps) -> float", &hands3c::cpu::fma_peak_rate);
  m.def("backward_update_peak_rate(int steps) -> float", &hands3c::cpu::backward_update_peak_rate);
  m.def("state_update_vector_ops() -> int", &hands3c::cpu::state_update_vector_ops);
  m.def("cpu_isa() -> str", &hands3c::cpu::cpu_isa_name);
}
