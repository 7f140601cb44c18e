// hands3c::cross_scan_fwd / cross_scan_bwd on CPU: argument checks, the per-position
// projection GEMMs, and dispatch to the best instruction-set build of the scan kernels
// (cross_scan_kernel.h).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <optional>

#include "cpu/cpu_ops.h"
#include "cpu/isa.h"
#include "cpu/cross_scan_dispatch.h"

namespace hands3c {
namespace cpu {

namespace {

using xs::CrossScanArgs;
using xs::CrossScanGrads;

constexpr int64_t kLanes = 16;
constexpr int64_t kCkpt = 64;
constexpr int64_t kMaxGroups = 8;

void check_args(const char* op, const at::Tensor& u, const at::Tensor& xw, const at::Tensor& dtw,
                const at::Tensor& dtb, const at::Tensor& alog, const at::Tensor& ds) {
  for (const at::Tensor* t : {&u, &xw, &dtw, &dtb, &alog, &ds}) {
    TORCH_CHECK(t->device().is_cpu(), op, ": expected CPU tensors, got one on ", t->device());
    TORCH_CHECK(t->scalar_type() == at::kFloat, op, ": expected float32 tensors, got ", t->scalar_type());
  }
  TORCH_CHECK(u.dim() == 4, op, ": u must be (B, D, P, Q)");
  const int64_t D = u.size(1);
  TORCH_CHECK(dtw.dim() == 3 && dtw.size(0) == 4 && dtw.size(1) == D, op, ": dt_projs_weight must be (4, D, R)");
  const int64_t R = dtw.size(2);
  TORCH_CHECK(alog.dim() == 2 && alog.size(0) == 4 * D, op, ": A_logs must be (4D, N)");
  const int64_t N = alog.size(1);
  TORCH_CHECK(N >= 1 && N <= 64, op, ": N must be in 1..64, got ", N);
  TORCH_CHECK(xw.dim() == 3 && xw.size(0) == 4 && xw.size(1) == R + 2 * N && xw.size(2) == D, op,
              ": x_proj_weight must be (4, R+2N, D)");
  TORCH_CHECK(dtb.numel() == 4 * D && ds.numel() == 4 * D, op, ": dt_projs_bias and Ds need 4D values");
}

// u as a (B, D, L) strided view when the (P, Q) plane is addressable with one stride (true for
// contiguous inputs and for the channel branch's permuted view); a contiguous copy otherwise.
at::Tensor plane_view(const at::Tensor& u) {
  const int64_t B = u.size(0), D = u.size(1), P = u.size(2), Q = u.size(3);
  int64_t sl = -1;
  if (Q == 1) sl = u.stride(2);
  else if (P == 1 || u.stride(2) == Q * u.stride(3)) sl = u.stride(3);
  if (sl < 0) return u.contiguous().view({B, D, P * Q});
  return u.as_strided({B, D, P * Q}, {u.stride(0), u.stride(1), sl});
}

CrossScanArgs make_args(const at::Tensor& u3, int64_t P, int64_t Q, const at::Tensor& dbl,
                        const at::Tensor& dtw, const at::Tensor& dtb, const at::Tensor& alog,
                        const at::Tensor& ds) {
  CrossScanArgs s;
  s.B = u3.size(0); s.D = u3.size(1); s.P = P; s.Q = Q; s.L = P * Q;
  s.R = dtw.size(2); s.N = alog.size(1); s.C = s.R + 2 * s.N;
  s.u = u3.data_ptr<float>(); s.u_sb = u3.stride(0); s.u_sd = u3.stride(1); s.u_sl = u3.stride(2);
  s.dbl = dbl.data_ptr<float>();
  s.dt_w = dtw.data_ptr<float>(); s.dt_b = dtb.data_ptr<float>();
  s.a_logs = alog.data_ptr<float>(); s.ds = ds.data_ptr<float>();
  return s;
}

// oneDNN's fp32 linear (x @ w^T), where this PyTorch build registers it: on an AMD EPYC (Zen 4)
// it ran the forward's projection GEMM 2.3-2.8x faster than at::matmul, whose MKL path there
// reached 27-35% of the FMA peak (benchmarks/ceilings.py prints the GEMM's share).
std::optional<c10::OperatorHandle> dnnl_linear_op() {
  static const std::optional<c10::OperatorHandle> op =
      c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
  return op;
}

at::Tensor dnnl_linear(const c10::OperatorHandle& op, const at::Tensor& x, const at::Tensor& w) {
  std::vector<c10::IValue> stack;
  stack.emplace_back(x);
  stack.emplace_back(w);
  stack.emplace_back(c10::IValue());                            // no bias
  stack.emplace_back(std::string("none"));                      // no fused activation
  stack.emplace_back(c10::List<std::optional<at::Scalar>>());  // its scalars
  stack.emplace_back(c10::IValue());                            // algorithm
  op.callBoxed(&stack);
  return stack.at(0).toTensor();
}

// dbl[b, l, k, c] = sum_d x_proj_weight[k, c, d] * u[b, d, l], as a (B, L, 4, C) contiguous
// tensor.  One oneDNN call when the (B*L, D) rows are addressable as one matrix (the channel
// branch's view), one per batch element otherwise (oneDNN reads the spatial branch's
// column-major (L, D) slices in place); at::matmul where oneDNN is not built in.
at::Tensor projections(const at::Tensor& u3, const at::Tensor& xw) {
  const int64_t B = u3.size(0), D = u3.size(1), L = u3.size(2), C = xw.size(1);
  auto w = xw.reshape({xw.size(0) * C, xw.size(2)}).contiguous();  // (4C, D)
  const auto x = u3.transpose(1, 2);                                 // (B, L, D)
  const auto op = dnnl_linear_op();
  if (!op || !at::globalContext().userEnabledMkldnn() || B * L == 0 || D == 0)
    return at::matmul(x, w.t()).contiguous().view({B, L, 4, C});
  if (B == 1 || x.stride(0) == L * x.stride(1)) {
    const auto rows = x.as_strided({B * L, D}, {x.stride(1), x.stride(2)});
    return dnnl_linear(*op, rows, w).contiguous().view({B, L, 4, C});
  }
  auto out = at::empty({B, L, 4 * C}, u3.options());
  for (int64_t b = 0; b < B; ++b) out[b].copy_(dnnl_linear(*op, x[b], w));
  return out.view({B, L, 4, C});
}

// Natural (B, L, 4, C) projections -> (B, 4, L, C) in each direction's scan order
// (row-major for k = 0, 2; column-major for k = 1, 3), and the inverse for gradients.
at::Tensor to_scan_order(const at::Tensor& dbl, int64_t P, int64_t Q) {
  const int64_t B = dbl.size(0), L = dbl.size(1), C = dbl.size(3);
  auto out = at::empty({B, 4, L, C}, dbl.options());
  auto d5 = dbl.view({B, P, Q, 4, C});
  for (int64_t k = 0; k < 4; ++k) {
    if (k % 2 == 0) out.select(1, k).view({B, P, Q, C}).copy_(d5.select(3, k));
    else out.select(1, k).view({B, Q, P, C}).copy_(d5.select(3, k).transpose(1, 2));
  }
  return out;
}

at::Tensor from_scan_order(const at::Tensor& scan, int64_t P, int64_t Q) {
  const int64_t B = scan.size(0), L = scan.size(2), C = scan.size(3);
  auto out = at::empty({B, L, 4, C}, scan.options());
  auto o5 = out.view({B, P, Q, 4, C});
  for (int64_t k = 0; k < 4; ++k) {
    if (k % 2 == 0) o5.select(3, k).copy_(scan.select(1, k).view({B, P, Q, C}));
    else o5.select(3, k).copy_(scan.select(1, k).view({B, Q, P, C}).transpose(1, 2));
  }
  return out;
}

// An uninitialised (B, D, P, Q) float tensor whose dimensions lie in memory in `order`,
// outermost first: y.permute(order) is contiguous.
at::Tensor empty_in_order(at::IntArrayRef sizes, at::IntArrayRef order, const at::TensorOptions& opts) {
  std::array<int64_t, 4> storage{}, inverse{};
  for (int64_t i = 0; i < 4; ++i) {
    storage[i] = sizes[order[i]];
    inverse[order[i]] = i;
  }
  return at::empty(storage, opts).permute(inverse);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> cross_scan_fwd(const Tensor& u, const Tensor& x_proj_weight,
                                                  const Tensor& dt_projs_weight, const Tensor& dt_projs_bias,
                                                  const Tensor& A_logs, const Tensor& Ds, at::IntArrayRef out_order) {
  check_args("cross_scan_fwd", u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds);
  const int64_t B = u.size(0), D = u.size(1), P = u.size(2), Q = u.size(3), L = P * Q;
  const int64_t N = A_logs.size(1);
  const auto u3 = plane_view(u);
  const auto dbl = projections(u3, x_proj_weight).contiguous();
  const auto dtw = dt_projs_weight.contiguous(), dtb = dt_projs_bias.contiguous();
  const auto alog = A_logs.contiguous(), ds = Ds.contiguous();
  // The kernel writes y through its strides, so the requested layout costs no copy.
  auto out = empty_in_order({B, D, P, Q}, out_order, u.options());
  auto ckpt = at::empty({B, 4, D, (L + kCkpt - 1) / kCkpt, N}, u.options());
  const auto dbl_scan = to_scan_order(dbl, P, Q);
  auto s = make_args(u3, P, Q, dbl_scan, dtw, dtb, alog, ds);
  s.y_sb = out.stride(0); s.y_sd = out.stride(1); s.y_sp = out.stride(2); s.y_sq = out.stride(3);
  switch (selected_isa()) {
    case Isa::kAvx512: xs::forward_avx512(s, out.data_ptr<float>(), ckpt.data_ptr<float>()); break;
    case Isa::kAvx2: xs::forward_avx2(s, out.data_ptr<float>(), ckpt.data_ptr<float>()); break;
    default: xs::forward_baseline(s, out.data_ptr<float>(), ckpt.data_ptr<float>()); break;
  }
  return {out, dbl, ckpt};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cross_scan_bwd(
    const Tensor& dout, const Tensor& u, const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
    const Tensor& dt_projs_bias, const Tensor& A_logs, const Tensor& Ds, const Tensor& dbl,
    const Tensor& checkpoints) {
  check_args("cross_scan_bwd", u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds);
  const int64_t B = u.size(0), D = u.size(1), P = u.size(2), Q = u.size(3), L = P * Q;
  const int64_t R = dt_projs_weight.size(2), N = A_logs.size(1), C = R + 2 * N;
  TORCH_CHECK(dout.sizes() == u.sizes(), "cross_scan_bwd: dout must have u's shape");
  TORCH_CHECK(dbl.dim() == 4 && dbl.size(0) == B && dbl.size(1) == L && dbl.size(2) == 4 && dbl.size(3) == C,
              "cross_scan_bwd: dbl must be (B, L, 4, R+2N)");
  TORCH_CHECK(checkpoints.dim() == 5 && checkpoints.size(3) == (L + kCkpt - 1) / kCkpt &&
                  checkpoints.size(4) == N,
              "cross_scan_bwd: checkpoints must be (B, 4, D, ceil(L/64), N)");
  const auto u3 = plane_view(u);
  // dout is read through its strides: the merge's gradient arrives in the block's
  // (B, H, W, d_inner) layout, and a transposing copy here would cost as much as the merge.
  const auto doutf = dout.to(at::kFloat);
  const auto dbl_scan = to_scan_order(dbl.contiguous(), P, Q);
  const auto ckpt = checkpoints.contiguous();
  const auto dtw = dt_projs_weight.contiguous(), dtb = dt_projs_bias.contiguous();
  const auto alog = A_logs.contiguous(), ds = Ds.contiguous();
  const auto s = make_args(u3, P, Q, dbl_scan, dtw, dtb, alog, ds);

  const int64_t nblocks = (D + kLanes - 1) / kLanes;
  const int64_t bpg = (nblocks + kMaxGroups - 1) / kMaxGroups;
  const int64_t ngroups = (nblocks + bpg - 1) / bpg;
  auto opts = u.options();
  auto du = at::empty({B, D, L}, opts);
  auto ddbl_part = at::zeros({ngroups, B, 4, L, C}, opts);
  auto dw_part = at::empty({B, 4, D, R}, opts);
  auto db_part = at::empty({B, 4, D}, opts);
  auto dalog_part = at::empty({B, 4 * D, N}, opts);
  auto dds_part = at::empty({B, 4 * D}, opts);
  CrossScanGrads g;
  g.dout = doutf.data_ptr<float>();
  g.dout_sb = doutf.stride(0); g.dout_sd = doutf.stride(1); g.dout_sp = doutf.stride(2); g.dout_sq = doutf.stride(3);
  g.ckpt = ckpt.data_ptr<float>(); g.du = du.data_ptr<float>();
  g.ddbl_part = ddbl_part.data_ptr<float>(); g.dw_part = dw_part.data_ptr<float>();
  g.db_part = db_part.data_ptr<float>(); g.dalog_part = dalog_part.data_ptr<float>();
  g.dds_part = dds_part.data_ptr<float>(); g.ngroups = ngroups; g.blocks_per_group = bpg;
  switch (selected_isa()) {
    case Isa::kAvx512: xs::backward_avx512(s, g); break;
    case Isa::kAvx2: xs::backward_avx2(s, g); break;
    default: xs::backward_baseline(s, g); break;
  }

  // Fixed-order reductions (group partials, then batch) keep the result independent of the
  // thread count.
  auto ddbl_scan = ddbl_part[0];
  for (int64_t i = 1; i < ngroups; ++i) ddbl_scan.add_(ddbl_part[i]);
  auto ddbl2 = from_scan_order(ddbl_scan, P, Q).view({B, L, 4 * C});
  auto w = x_proj_weight.reshape({4 * C, D});
  auto dxw = at::zeros({4 * C, D}, opts);
  auto dtw_grad = dw_part[0].clone(), dtb_grad = db_part[0].clone();
  auto dalog = dalog_part[0].clone(), dds = dds_part[0].clone();
  for (int64_t b = 0; b < B; ++b) {
    dxw.addmm_(ddbl2[b].t(), u3[b].t());   // (4C, L) @ (L, D)
    du[b].addmm_(w.t(), ddbl2[b].t());     // (D, 4C) @ (4C, L): the projection's path to u
    if (b > 0) {
      dtw_grad.add_(dw_part[b]);
      dtb_grad.add_(db_part[b]);
      dalog.add_(dalog_part[b]);
      dds.add_(dds_part[b]);
    }
  }
  // A = -exp(A_logs): dL/dA_logs = dL/dA * A.
  dalog.mul_(-at::exp(alog));
  return {du.view({B, D, P, Q}), dxw.view({4, C, D}), dtw_grad, dtb_grad.view({4, D}), dalog, dds};
}

double state_update_peak_rate(int64_t steps) {
  TORCH_CHECK_VALUE(steps > 0, "hands3c::state_update_peak_rate: steps must be positive, got ", steps);
  switch (selected_isa()) {
    case Isa::kAvx512: return xs::state_update_peak_avx512(steps);
    case Isa::kAvx2: return xs::state_update_peak_avx2(steps);
    default: return xs::state_update_peak_baseline(steps);
  }
}

double fma_peak_rate(int64_t steps) {
  TORCH_CHECK_VALUE(steps > 0, "hands3c::fma_peak_rate: steps must be positive, got ", steps);
  switch (selected_isa()) {
    case Isa::kAvx512: return xs::fma_peak_avx512(steps);
    case Isa::kAvx2: return xs::fma_peak_avx2(steps);
    default: return xs::fma_peak_baseline(steps);
  }
}

double backward_update_peak_rate(int64_t steps) {
  TORCH_CHECK_VALUE(steps > 0, "hands3c::backward_update_peak_rate: steps must be positive, got ", steps);
  switch (selected_isa()) {
    case Isa::kAvx512: return xs::backward_update_peak_avx512(steps);
    case Isa::kAvx2: return xs::backward_update_peak_avx2(steps);
    default: return xs::backward_update_peak_baseline(steps);
  }
}

int64_t state_update_vector_ops() {
  switch (selected_isa()) {
    case Isa::kAvx512: return xs::ops_per_update_avx512();
    case Isa::kAvx2: return xs::ops_per_update_avx2();
    default: return xs::ops_per_update_baseline();
  }
}

std::string cpu_isa_name() { return isa_name(selected_isa()); }

}  // namespace cpu
}  // namespace hands3c
