// CUDA kernels of hands3c::cross_scan_fwd / cross_scan_bwd: the per-position
// projection GEMMs (cuBLAS through at::matmul), and the fused scan launches (scan_fwd.cu /
// scan_bwd.cu walk the four directions by index arithmetic and compute Δ from dt_low in the
// kernel).  Contract: handS3C/ops/cross_scan.py; argument checks: hands3c/op_checks.h.
#include "cuda/bind_common.h"

namespace hands3c {
namespace cuda {
namespace bind {

namespace {

constexpr const char* kFwd = "hands3c::cross_scan_fwd";
constexpr const char* kBwd = "hands3c::cross_scan_bwd";

struct Prepared {
  ScanProblem pb;
  Tensor u3, A, dtw, dtb, ds;  // kept alive for the launch
  int64_t B = 0, D = 0, P = 0, Q = 0, L = 0, N = 0, R = 0, C = 0;
};

// u as a (B, D, L) strided view when the (P, Q) plane is addressable with one stride (true for
// contiguous inputs and for the channel branch's permuted view); a contiguous copy otherwise.
Tensor plane_view(const Tensor& u) {
  const int64_t B = u.size(0), D = u.size(1), P = u.size(2), Q = u.size(3);
  int64_t sl = -1;
  if (Q == 1) sl = u.stride(2);
  else if (P == 1 || u.stride(2) == Q * u.stride(3)) sl = u.stride(3);
  if (sl < 0) return u.contiguous().view({B, D, P * Q});
  return u.as_strided({B, D, P * Q}, {u.stride(0), u.stride(1), sl});
}

// Arguments already validated by checks::cross_scan_fwd / cross_scan_bwd (sizes in d).
Prepared prepare(const char* op, const Tensor& u, const Tensor& xw, const Tensor& dtw, const Tensor& dtb,
                 const Tensor& alog, const Tensor& ds, const checks::CrossScanDims& d) {
  Prepared p;
  p.B = d.B;
  p.D = d.D;
  p.P = d.P;
  p.Q = d.Q;
  p.L = d.L;
  p.R = d.R;
  p.N = d.N;
  p.C = d.C;
  // Half-precision u is read as float32 (the operator's contract).
  p.u3 = plane_view(u.scalar_type() == at::kFloat ? u : u.to(at::kFloat));
  p.A = at::exp(alog).neg_().contiguous();
  p.dtw = dtw.contiguous();
  p.dtb = dtb.contiguous();
  p.ds = ds.contiguous();

  ScanProblem& pb = p.pb;
  pb.batch = p.B;
  pb.K = 4;
  pb.D = p.D;
  pb.L = p.L;
  pb.P = p.P;
  pb.Q = p.Q;
  pb.N = p.N;
  pb.R = p.R;
  pb.G = 1;
  pb.cross = true;
  pb.softplus = true;
  pb.u = view3(p.u3, op, "u");
  pb.A = p.A.data_ptr<float>();
  pb.Dskip = p.ds.data_ptr<float>();
  pb.delta_bias = p.dtb.data_ptr<float>();
  pb.w = p.dtw.data_ptr<float>();
  return p;
}

// The per-position vectors live in dbl (B, L, 4, R+2N): dt_low, then B, then C.
void attach_dbl(ScanProblem& pb, const Tensor& dbl, int64_t R, int64_t N, int64_t C) {
  const float* base = dbl.data_ptr<float>();
  VecView v;
  v.dtype = kFloat32;
  v.sb = pb.L * 4 * C;
  v.sk = C;
  v.sg = 0;
  v.si = 1;
  v.sl = 4 * C;
  pb.dtl = v;
  pb.dtl.p = base;
  pb.Bv = v;
  pb.Bv.p = base + R;
  pb.Cv = v;
  pb.Cv.p = base + R + N;
}

ScanPlan make_plan(const char* op, const ScanProblem& pb, const Tensor& like, bool backward) {
  const ScanPlan pl = plan_scan(pb, target_threads(like));
  const size_t need = backward ? scan_bwd_smem_bytes(pl) : scan_fwd_smem_bytes(pl);
  const size_t have = device_max_smem_optin(device_index(like));
  TORCH_CHECK(need <= have, op, ": this configuration (N=", pb.N, ", R=", pb.R, ") needs ", need,
              " bytes of shared memory per block, the device allows ", have);
  TORCH_CHECK(pl.grid <= std::numeric_limits<int32_t>::max(), op, ": problem too large (", pl.grid, " blocks)");
  return pl;
}

std::tuple<Tensor, Tensor, Tensor> cross_scan_fwd(const Tensor& u, const Tensor& x_proj_weight,
                                                  const Tensor& dt_projs_weight, const Tensor& dt_projs_bias,
                                                  const Tensor& A_logs, const Tensor& Ds,
                                                  at::OptionalIntArrayRef out_order) {
  const checks::CrossScanDims d =
      checks::cross_scan_fwd(kFwd, kTarget, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds);
  const auto order = checks::cross_scan_out_order(kFwd, out_order);
  const checks::NoAutocast no_autocast;
  DeviceGuard guard(u);
  Prepared p = prepare(kFwd, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, d);
  // dbl[b, l, k, c] = sum_d x_proj_weight[k, c, d] * u[b, d, l]: one GEMM (full float32 unless
  // the user enabled TF32 for matmuls).
  const Tensor w = x_proj_weight.reshape({4 * p.C, p.D});
  Tensor dbl = at::matmul(p.u3.transpose(1, 2), w.t()).contiguous().view({p.B, p.L, 4, p.C});
  attach_dbl(p.pb, dbl, p.R, p.N, p.C);
  const ScanPlan pl = make_plan(kFwd, p.pb, u, false);
  Tensor out = empty_f32({p.B, p.D, p.P, p.Q}, u);
  Tensor ckpt = empty_f32({p.B, 4, p.D, pl.nchunks, p.N}, u);
  poison(out);
  poison(ckpt);
  Tensor ws = empty_f32({std::max<int64_t>(1, scan_fwd_workspace(p.pb, pl))}, u);
  ScanFwdIO io;
  io.out = out.data_ptr();
  io.out_dtype = kFloat32;
  io.ckpt = ckpt.data_ptr<float>();
  check_launch(scan_forward(p.pb, pl, io, ws.data_ptr<float>(), current_stream(u)));
  if (order != std::array<int64_t, 4>{0, 1, 2, 3}) {
    // The kernels write y contiguously; another layout is one copy into it here (the CPU
    // kernels write every layout directly).
    std::array<int64_t, 4> storage{}, inverse{};
    for (int64_t i = 0; i < 4; ++i) {
      storage[i] = out.size(order[i]);
      inverse[order[i]] = i;
    }
    Tensor y = empty_f32(storage, u).permute(inverse);
    y.copy_(out);
    out = y;
  }
  return {out, dbl, ckpt};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cross_scan_bwd(
    const Tensor& dout, const Tensor& u, const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
    const Tensor& dt_projs_bias, const Tensor& A_logs, const Tensor& Ds, const Tensor& dbl,
    const Tensor& checkpoints) {
  const checks::CrossScanDims d = checks::cross_scan_bwd(kBwd, kTarget, dout, u, x_proj_weight, dt_projs_weight,
                                                         dt_projs_bias, A_logs, Ds, dbl, checkpoints);
  const checks::NoAutocast no_autocast;
  DeviceGuard guard(u);
  Prepared p = prepare(kBwd, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, d);
  const Tensor dbl_c = dbl.contiguous();
  const Tensor ckpt = checkpoints.contiguous();
  const Tensor dout3 = dout.to(at::kFloat).contiguous().view({p.B, p.D, p.L});
  attach_dbl(p.pb, dbl_c, p.R, p.N, p.C);
  const ScanPlan pl = make_plan(kBwd, p.pb, u, true);

  Tensor du = empty_f32({p.B, p.D, p.L}, u);
  Tensor ddbl = empty_f32({p.B, p.L, 4, p.C}, u);
  Tensor dA = empty_f32({4 * p.D, p.N}, u);
  Tensor dDs = empty_f32({4 * p.D}, u);
  Tensor ddtb = empty_f32({4 * p.D}, u);
  Tensor ddtw = empty_f32({4, p.D, p.R}, u);
  for (Tensor* t : {&du, &ddbl, &dA, &dDs, &ddtb, &ddtw}) poison(*t);

  ScanBwdIO io;
  io.dout = view3(dout3, kBwd, "dout");
  io.ckpt = ckpt.data_ptr<float>();
  io.du = du.data_ptr();
  io.du_dtype = kFloat32;
  io.ddbl = ddbl.data_ptr<float>();
  io.dA = dA.data_ptr<float>();
  io.dD = dDs.data_ptr<float>();
  io.ddelta_bias = ddtb.data_ptr<float>();
  io.dw = ddtw.data_ptr<float>();
  Tensor ws = empty_f32({std::max<int64_t>(1, scan_bwd_workspace(p.pb, pl))}, u);
  check_launch(scan_backward(p.pb, pl, io, ws.data_ptr<float>(), current_stream(u)));
  if (p.R == 0) ddtw.zero_();

  // The projection's share: dbl = W u per position, so dW = sum_{b,l} ddbl u^T and du += W^T ddbl.
  const Tensor w = x_proj_weight.reshape({4 * p.C, p.D});
  const Tensor ddbl2 = ddbl.view({p.B * p.L, 4 * p.C});
  const Tensor u_rows = p.u3.transpose(1, 2).reshape({p.B * p.L, p.D});
  Tensor dxw = at::matmul(ddbl2.t(), u_rows).view({4, p.C, p.D});
  du.add_(at::matmul(ddbl.view({p.B, p.L, 4 * p.C}), w).transpose(1, 2));
  Tensor dalog = dA.mul_(p.A);  // A = -exp(A_logs): dL/dA_logs = dL/dA * A
  return {du.view({p.B, p.D, p.P, p.Q}), dxw, ddtw, ddtb.view({4, p.D}), dalog, dDs};
}

}  // namespace

}  // namespace bind
}  // namespace cuda
}  // namespace hands3c

TORCH_LIBRARY_IMPL(HS3C_BIND_LIB, HS3C_BIND_KEY, m) {
  m.impl("cross_scan_fwd", &hands3c::cuda::bind::cross_scan_fwd);
  m.impl("cross_scan_bwd", &hands3c::cuda::bind::cross_scan_bwd);
}
