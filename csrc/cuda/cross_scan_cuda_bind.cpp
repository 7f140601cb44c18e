// CUDA kernels of hands3c::cross_scan_fwd / cross_scan_bwd: argument checks, the per-position
// projection GEMMs (cuBLAS through at::matmul), and the fused scan launches (scan_fwd.cu /
// scan_bwd.cu walk the four directions by index arithmetic and compute Δ from dt_low in the
// kernel).  Contract: handS3C/ops/cross_scan.py.
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

void check_args(const char* op, const Tensor& u, const Tensor& xw, const Tensor& dtw, const Tensor& dtb,
                const Tensor& alog, const Tensor& ds) {
  TORCH_CHECK(u.dim() == 4, op, ": u must have shape (B, D, P, Q), got ", u.sizes());
  dtype_tag(u, op, "u");
  check_f32(xw, op, "x_proj_weight");
  check_f32(dtw, op, "dt_projs_weight");
  check_f32(dtb, op, "dt_projs_bias");
  check_f32(alog, op, "A_logs");
  check_f32(ds, op, "Ds");
  const int64_t D = u.size(1);
  TORCH_CHECK(u.size(0) >= 1 && D >= 1 && u.size(2) >= 1 && u.size(3) >= 1, op,
              ": u must have no empty dimension, got ", u.sizes());
  TORCH_CHECK(u.size(2) * u.size(3) <= std::numeric_limits<int32_t>::max(), op, ": the plane must have < 2^31 positions");
  TORCH_CHECK(dtw.dim() == 3 && dtw.size(0) == 4 && dtw.size(1) == D, op, ": dt_projs_weight must have shape (4, D=", D,
              ", R), got ", dtw.sizes());
  const int64_t R = dtw.size(2);
  TORCH_CHECK(alog.dim() == 2 && alog.size(0) == 4 * D, op, ": A_logs must have shape (4*D=", 4 * D, ", N), got ",
              alog.sizes());
  const int64_t N = alog.size(1);
  TORCH_CHECK(N >= 1 && N <= kMaxStateSize, op, ": the state size N (A_logs.shape[1]) must be in 1..", kMaxStateSize,
              ", got ", N);
  TORCH_CHECK(xw.dim() == 3 && xw.size(0) == 4 && xw.size(1) == R + 2 * N && xw.size(2) == D, op,
              ": x_proj_weight must have shape (4, R+2N=", R + 2 * N, ", D=", D, "), got ", xw.sizes());
  TORCH_CHECK(dtb.numel() == 4 * D && ds.numel() == 4 * D, op, ": dt_projs_bias and Ds must hold 4*D=", 4 * D,
              " values, got ", dtb.numel(), " and ", ds.numel());
}

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

Prepared prepare(const char* op, const Tensor& u, const Tensor& xw, const Tensor& dtw, const Tensor& dtb,
                 const Tensor& alog, const Tensor& ds) {
  check_args(op, u, xw, dtw, dtb, alog, ds);
  Prepared p;
  p.B = u.size(0);
  p.D = u.size(1);
  p.P = u.size(2);
  p.Q = u.size(3);
  p.L = p.P * p.Q;
  p.R = dtw.size(2);
  p.N = alog.size(1);
  p.C = p.R + 2 * p.N;
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
                                                  const Tensor& A_logs, const Tensor& Ds) {
  check_devices(kFwd, {{"u", &u}, {"x_proj_weight", &x_proj_weight}, {"dt_projs_weight", &dt_projs_weight},
                       {"dt_projs_bias", &dt_projs_bias}, {"A_logs", &A_logs}, {"Ds", &Ds}});
  DeviceGuard guard(u);
  Prepared p = prepare(kFwd, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds);
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
  return {out, dbl, ckpt};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cross_scan_bwd(
    const Tensor& dout, const Tensor& u, const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
    const Tensor& dt_projs_bias, const Tensor& A_logs, const Tensor& Ds, const Tensor& dbl,
    const Tensor& checkpoints) {
  check_devices(kBwd, {{"dout", &dout}, {"u", &u}, {"x_proj_weight", &x_proj_weight},
                       {"dt_projs_weight", &dt_projs_weight}, {"dt_projs_bias", &dt_projs_bias}, {"A_logs", &A_logs},
                       {"Ds", &Ds}, {"dbl", &dbl}, {"checkpoints", &checkpoints}});
  DeviceGuard guard(u);
  Prepared p = prepare(kBwd, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds);
  TORCH_CHECK(dout.sizes() == u.sizes(), kBwd, ": dout must have u's shape ", u.sizes(), ", got ", dout.sizes());
  check_f32(dbl, kBwd, "dbl");
  TORCH_CHECK(dbl.sizes() == at::IntArrayRef({p.B, p.L, 4, p.C}), kBwd, ": dbl must have shape (B, L, 4, R+2N) = (",
              p.B, ", ", p.L, ", 4, ", p.C, "), got ", dbl.sizes());
  const int64_t nchunks = (p.L + kCheckpointStride - 1) / kCheckpointStride;
  check_f32(checkpoints, kBwd, "checkpoints");
  TORCH_CHECK(checkpoints.sizes() == at::IntArrayRef({p.B, 4, p.D, nchunks, p.N}), kBwd,
              ": checkpoints must have shape (B, 4, D, ceil(L/64), N), got ", checkpoints.sizes());
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
