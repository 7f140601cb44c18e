// CUDA kernels of hands3c::selective_scan_fwd / selective_scan_bwd: allocation of outputs and
// workspace, and the launch (kernels in scan_fwd.cu / scan_bwd.cu).
// Contract: handS3C/ops/selective_scan.py; argument checks: hands3c/op_checks.h.
#include <numeric>

#include "cuda/bind_common.h"

namespace hands3c {
namespace cuda {
namespace bind {

namespace {

constexpr const char* kFwd = "hands3c::selective_scan_fwd";
constexpr const char* kBwd = "hands3c::selective_scan_bwd";

struct Prepared {
  ScanProblem pb;
  Tensor A, D, delta_bias;  // contiguous copies kept alive for the launch
  int64_t batch = 0, dim = 0, L = 0, N = 0;
};

VecView bc_view(const Tensor& M, int64_t G, const char* op, const char* name) {
  VecView v;
  v.p = M.data_ptr();
  v.dtype = dtype_tag(M, op, name);
  v.sb = M.stride(0);
  v.sk = 0;
  v.sg = M.stride(1);
  v.si = M.stride(2);
  v.sl = M.stride(3);
  v.gdiv = G / M.size(1);
  return v;
}

// Arguments already validated by checks::selective_scan_fwd / selective_scan_bwd (sizes in s).
Prepared prepare(const char* op, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                 const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                 bool delta_softplus, const checks::SelectiveScanDims& s) {
  Prepared p;
  p.batch = s.batch;
  p.dim = s.dim;
  p.L = s.L;
  p.N = s.N;
  if (present(D)) p.D = D->contiguous();
  if (present(delta_bias)) p.delta_bias = delta_bias->contiguous();
  p.A = A.contiguous();

  ScanProblem& pb = p.pb;
  pb.batch = p.batch;
  pb.K = 1;
  pb.D = p.dim;
  pb.L = p.L;
  pb.P = 1;
  pb.Q = p.L;
  pb.N = p.N;
  pb.R = 0;
  // The finest grouping of B's and C's channel groups: a block's channels share one group of each.
  pb.G = std::lcm(B.size(1), C.size(1));
  pb.cross = false;
  pb.softplus = delta_softplus;
  pb.u = view3(u, op, "u");
  pb.delta = view3(delta, op, "delta");
  if (present(z)) pb.z = view3(*z, op, "z");
  pb.Bv = bc_view(B, pb.G, op, "B");
  pb.Cv = bc_view(C, pb.G, op, "C");
  pb.A = p.A.data_ptr<float>();
  pb.Dskip = p.D.defined() ? p.D.data_ptr<float>() : nullptr;
  pb.delta_bias = p.delta_bias.defined() ? p.delta_bias.data_ptr<float>() : nullptr;
  return p;
}

ScanPlan make_plan(const char* op, const ScanProblem& pb, const Tensor& like, bool backward) {
  const ScanPlan pl = plan_scan(pb, target_threads(like));
  const size_t need = backward ? scan_bwd_smem_bytes(pl) : scan_fwd_smem_bytes(pl);
  const size_t have = device_max_smem_optin(device_index(like));
  TORCH_CHECK(need <= have, op, ": this configuration needs ", need, " bytes of shared memory per block, the device "
              "allows ", have);
  TORCH_CHECK(pl.grid <= std::numeric_limits<int32_t>::max(), op, ": problem too large (", pl.grid, " blocks)");
  return pl;
}

std::tuple<Tensor, Tensor, Tensor> selective_scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                      const Tensor& B, const Tensor& C, const OptTensor& D,
                                                      const OptTensor& z, const OptTensor& delta_bias,
                                                      bool delta_softplus) {
  const checks::SelectiveScanDims s = checks::selective_scan_fwd(kFwd, kTarget, u, delta, A, B, C, D, z, delta_bias);
  const checks::NoAutocast no_autocast;
  DeviceGuard guard(u);
  Prepared p = prepare(kFwd, u, delta, A, B, C, D, z, delta_bias, delta_softplus, s);
  const ScanPlan pl = make_plan(kFwd, p.pb, u, false);
  Tensor out = at::empty({p.batch, p.dim, p.L}, u.options());
  Tensor last = empty_f32({p.batch, p.dim, p.N}, u);
  Tensor ckpt = empty_f32({p.batch, p.dim, pl.nchunks, p.N}, u);
  poison(out);
  poison(last);
  poison(ckpt);
  Tensor ws = empty_f32({std::max<int64_t>(1, scan_fwd_workspace(p.pb, pl))}, u);
  ScanFwdIO io;
  io.out = out.data_ptr();
  io.out_dtype = dtype_tag(out, kFwd, "out");
  io.last_state = last.data_ptr<float>();
  io.ckpt = ckpt.data_ptr<float>();
  check_launch(scan_forward(p.pb, pl, io, ws.data_ptr<float>(), current_stream(u)));
  return {out, last, ckpt};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_bwd(
    const Tensor& dout, const OptTensor& dlast_state, const Tensor& u, const Tensor& delta, const Tensor& A,
    const Tensor& B, const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
    bool delta_softplus, const Tensor& checkpoints) {
  const checks::SelectiveScanDims s = checks::selective_scan_bwd(kBwd, kTarget, dout, dlast_state, u, delta, A, B, C,
                                                                 D, z, delta_bias, checkpoints);
  const checks::NoAutocast no_autocast;
  DeviceGuard guard(u);
  Prepared p = prepare(kBwd, u, delta, A, B, C, D, z, delta_bias, delta_softplus, s);
  const ScanPlan pl = make_plan(kBwd, p.pb, u, true);
  TORCH_CHECK(pl.nchunks == s.nchunks, kBwd, ": the launch plan's checkpoint count ", pl.nchunks,
              " differs from the checked one ", s.nchunks);
  Tensor dlast;
  if (present(dlast_state)) dlast = dlast_state->contiguous();
  const Tensor ckpt = checkpoints.contiguous();

  const auto cf = at::MemoryFormat::Contiguous;
  Tensor du = at::empty({p.batch, p.dim, p.L}, u.options().memory_format(cf));
  Tensor ddelta = at::empty({p.batch, p.dim, p.L}, delta.options().memory_format(cf));
  Tensor dA = empty_f32({p.dim, p.N}, u);
  Tensor dB = at::empty(B.sizes(), B.options().memory_format(cf));
  Tensor dC = at::empty(C.sizes(), C.options().memory_format(cf));
  Tensor dD = p.D.defined() ? empty_f32({p.dim}, u) : empty_f32({0}, u);
  Tensor dz = present(z) ? at::empty({p.batch, p.dim, p.L}, z->options().memory_format(cf)) : empty_f32({0}, u);
  Tensor ddb = p.delta_bias.defined() ? empty_f32({p.dim}, u) : empty_f32({0}, u);
  for (Tensor* t : {&du, &ddelta, &dA, &dB, &dC, &dD, &dz, &ddb}) poison(*t);

  ScanBwdIO io;
  io.dout = view3(dout, kBwd, "dout");
  io.dlast = dlast.defined() ? dlast.data_ptr<float>() : nullptr;
  io.ckpt = ckpt.data_ptr<float>();
  io.du = du.data_ptr();
  io.du_dtype = dtype_tag(du, kBwd, "du");
  io.ddelta = ddelta.data_ptr();
  io.ddelta_dtype = dtype_tag(ddelta, kBwd, "ddelta");
  if (present(z)) {
    io.dz = dz.data_ptr();
    io.dz_dtype = dtype_tag(dz, kBwd, "dz");
  }
  io.dB = dB.data_ptr();
  io.dB_dtype = dtype_tag(dB, kBwd, "dB");
  io.dC = dC.data_ptr();
  io.dC_dtype = dtype_tag(dC, kBwd, "dC");
  io.dA = dA.data_ptr<float>();
  io.dD = p.D.defined() ? dD.data_ptr<float>() : nullptr;
  io.ddelta_bias = p.delta_bias.defined() ? ddb.data_ptr<float>() : nullptr;
  Tensor ws = empty_f32({std::max<int64_t>(1, scan_bwd_workspace(p.pb, pl))}, u);
  check_launch(scan_backward(p.pb, pl, io, ws.data_ptr<float>(), current_stream(u)));
  return {du, ddelta, dA, dB, dC, dD, dz, ddb};
}

}  // namespace

}  // namespace bind
}  // namespace cuda
}  // namespace hands3c

TORCH_LIBRARY_IMPL(HS3C_BIND_LIB, HS3C_BIND_KEY, m) {
  m.impl("selective_scan_fwd", &hands3c::cuda::bind::selective_scan_fwd);
  m.impl("selective_scan_bwd", &hands3c::cuda::bind::selective_scan_bwd);
}
