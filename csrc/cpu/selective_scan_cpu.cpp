// hands3c::selective_scan_fwd / selective_scan_bwd on CPU: argument checks, the shape-only
// work plan (with the slice order in which each dB/dC group's partial rows are summed), output
// allocation, the batch sums of dA/dD/d(delta_bias), and dispatch to the best instruction-set
// build of the kernels (selective_scan_kernel.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/isa.h"
#include "cpu/selective_scan_dispatch.h"

namespace hands3c {
namespace cpu {

namespace {

using ss::DType;

constexpr int64_t kLanes = 16;         // channels per block (kLanes in the kernel)
constexpr int64_t kCkpt = 64;          // checkpoint stride (kCkpt in the kernel)
constexpr int64_t kMaxState = 64;
// Backward tasks aimed for when a group's channels are split into slices.  A constant, not the
// thread count: the slices fix the order of the dB/dC sums, so results are bitwise identical on
// any number of threads.  64 keeps a many-core machine busy while a slice still spans several
// blocks (its lane reduction is shared by them).
constexpr int64_t kTargetTasks = 64;

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat;
    case at::kHalf: return DType::kHalf;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK_TYPE(false, "selective_scan: unsupported dtype ", t.scalar_type());
  }
  return DType::kFloat;
}

bool is_scan_float(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kHalf || s == at::kBFloat16;
}

ss::View3 view3(const at::Tensor& t) {
  ss::View3 v;
  v.p = t.data_ptr();
  v.t = dtype_of(t);
  v.sb = t.stride(0);
  v.sd = t.stride(1);
  v.sl = t.stride(2);
  return v;
}

ss::View4 view4(const at::Tensor& t, int64_t dim) {
  ss::View4 v;
  v.p = t.data_ptr();
  v.t = dtype_of(t);
  v.sb = t.stride(0);
  v.sg = t.stride(1);
  v.sn = t.stride(2);
  v.sl = t.stride(3);
  v.G = t.size(1);
  v.cpg = dim / v.G;
  return v;
}

ss::Out3 out3(const at::Tensor& t) {
  ss::Out3 o;
  o.p = t.data_ptr();
  o.t = dtype_of(t);
  return o;
}

void check_args(const char* op, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                const at::Tensor& B, const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                const OptTensor& delta_bias) {
  auto cpu = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  };
  cpu(u, "u"); cpu(delta, "delta"); cpu(A, "A"); cpu(B, "B"); cpu(C, "C");
  TORCH_CHECK_VALUE(u.dim() == 3, op, ": u must be (batch, dim, L), got ", u.sizes());
  TORCH_CHECK_TYPE(is_scan_float(u), op, ": u must be float32, float16 or bfloat16, got ", u.scalar_type());
  TORCH_CHECK_VALUE(delta.sizes() == u.sizes(), op, ": delta must have u's shape ", u.sizes(), ", got ", delta.sizes());
  TORCH_CHECK_TYPE(delta.scalar_type() == u.scalar_type(), op, ": delta must have u's dtype");
  const int64_t batch = u.size(0), dim = u.size(1), L = u.size(2);
  TORCH_CHECK_VALUE(batch >= 1 && dim >= 1 && L >= 1, op, ": u must have no empty dimension, got ", u.sizes());
  TORCH_CHECK_TYPE(A.scalar_type() == at::kFloat, op, ": A must be float32, got ", A.scalar_type());
  TORCH_CHECK_VALUE(A.dim() == 2 && A.size(0) == dim, op, ": A must be (dim=", dim, ", N), got ", A.sizes());
  const int64_t N = A.size(1);
  TORCH_CHECK_VALUE(N >= 1 && N <= kMaxState, op, ": N (A.shape[1]) must be in 1..", kMaxState, ", got ", N);
  for (const auto* m : {&B, &C}) {
    const char* name = m == &B ? "B" : "C";
    TORCH_CHECK_TYPE(is_scan_float(*m), op, ": ", name, " must be float32, float16 or bfloat16");
    TORCH_CHECK_VALUE(m->dim() == 4 && m->size(0) == batch && m->size(1) >= 1 && dim % m->size(1) == 0 &&
                          m->size(2) == N && m->size(3) == L,
                      op, ": ", name, " must be (batch, G, N, L) = (", batch, ", G | ", dim, ", ", N, ", ", L,
                      "), got ", m->sizes());
  }
  for (const auto* o : {&D, &delta_bias}) {
    if (!o->has_value()) continue;
    const char* name = o == &D ? "D" : "delta_bias";
    cpu(**o, name);
    TORCH_CHECK_TYPE((*o)->scalar_type() == at::kFloat, op, ": ", name, " must be float32");
    TORCH_CHECK_VALUE((*o)->dim() == 1 && (*o)->size(0) == dim, op, ": ", name, " must be (dim=", dim, ",)");
  }
  if (z.has_value()) {
    cpu(*z, "z");
    TORCH_CHECK_VALUE(z->sizes() == u.sizes(), op, ": z must have u's shape");
    TORCH_CHECK_TYPE(z->scalar_type() == u.scalar_type(), op, ": z must have u's dtype");
  }
}

// The shape-only work plan (see ss::Plan).
struct PlanStore {
  std::vector<int64_t> block_d0, slice_begin, rowB, first_gB, rowC, first_gC;
  std::vector<int64_t> grpB_begin, grpB_rows, grpC_begin, grpC_rows;
  std::vector<int32_t> block_nl;
  ss::Plan plan;
};

void assign_rows(const PlanStore& ps, int64_t cpg, std::vector<int64_t>& row, std::vector<int64_t>& first_g,
                 int64_t& nrows) {
  const int64_t ns = static_cast<int64_t>(ps.slice_begin.size()) - 1;
  row.resize(ns);
  first_g.resize(ns);
  nrows = 0;
  for (int64_t s = 0; s < ns; ++s) {
    const int64_t kb0 = ps.slice_begin[s], kb1 = ps.slice_begin[s + 1];
    const int64_t df = ps.block_d0[kb0], dl = ps.block_d0[kb1 - 1] + ps.block_nl[kb1 - 1] - 1;
    first_g[s] = df / cpg;
    row[s] = nrows;
    nrows += dl / cpg - df / cpg + 1;
  }
}

// The rows each group of dB (or dC) sums, in slice order: group g's are rows[begin[g] .. begin[g+1]).
void group_rows(const std::vector<int64_t>& row, const std::vector<int64_t>& first_g, int64_t nrows, int64_t G,
                std::vector<int64_t>& begin, std::vector<int64_t>& rows) {
  std::vector<std::vector<int64_t>> src(G);
  const int64_t ns = static_cast<int64_t>(row.size());
  for (int64_t s = 0; s < ns; ++s) {
    const int64_t nr = (s + 1 < ns ? row[s + 1] : nrows) - row[s];
    for (int64_t i = 0; i < nr; ++i) src[first_g[s] + i].push_back(row[s] + i);
  }
  begin.assign(1, 0);
  rows.clear();
  for (int64_t g = 0; g < G; ++g) {
    rows.insert(rows.end(), src[g].begin(), src[g].end());
    begin.push_back(static_cast<int64_t>(rows.size()));
  }
}

void make_plan(int64_t batch, int64_t dim, int64_t cpgB, int64_t cpgC, PlanStore& ps) {
  const int64_t GB = dim / cpgB, GC = dim / cpgC;
  const int64_t R = std::gcd(cpgB, cpgC);  // channels sharing both a B group and a C group
  ps.plan.uniform = R >= kLanes;
  if (ps.plan.uniform) {
    // Blocks never straddle a region of R channels; each region's blocks are cut into S slices.
    const int64_t nreg = dim / R, bpr = (R + kLanes - 1) / kLanes;
    const int64_t want = (kTargetTasks + batch * nreg - 1) / (batch * nreg);
    const int64_t S = std::min(bpr, std::max<int64_t>(1, want));
    for (int64_t r = 0; r < nreg; ++r) {
      for (int64_t i = 0; i < bpr; ++i) {
        ps.block_d0.push_back(r * R + i * kLanes);
        ps.block_nl.push_back(static_cast<int32_t>(std::min(kLanes, R - i * kLanes)));
      }
      for (int64_t q = 0; q < S; ++q) ps.slice_begin.push_back(r * bpr + q * bpr / S);
    }
  } else {
    // Lanes of a block read different groups: every block is its own slice.
    for (int64_t d0 = 0; d0 < dim; d0 += kLanes) {
      ps.slice_begin.push_back(static_cast<int64_t>(ps.block_d0.size()));
      ps.block_d0.push_back(d0);
      ps.block_nl.push_back(static_cast<int32_t>(std::min(kLanes, dim - d0)));
    }
  }
  ps.slice_begin.push_back(static_cast<int64_t>(ps.block_d0.size()));
  assign_rows(ps, cpgB, ps.rowB, ps.first_gB, ps.plan.nrowsB);
  assign_rows(ps, cpgC, ps.rowC, ps.first_gC, ps.plan.nrowsC);
  group_rows(ps.rowB, ps.first_gB, ps.plan.nrowsB, GB, ps.grpB_begin, ps.grpB_rows);
  group_rows(ps.rowC, ps.first_gC, ps.plan.nrowsC, GC, ps.grpC_begin, ps.grpC_rows);
  ps.plan.grpB_begin = ps.grpB_begin.data();
  ps.plan.grpB_rows = ps.grpB_rows.data();
  ps.plan.grpC_begin = ps.grpC_begin.data();
  ps.plan.grpC_rows = ps.grpC_rows.data();
  ps.plan.nblocks = static_cast<int64_t>(ps.block_d0.size());
  ps.plan.block_d0 = ps.block_d0.data();
  ps.plan.block_nl = ps.block_nl.data();
  ps.plan.nslices = static_cast<int64_t>(ps.slice_begin.size()) - 1;
  ps.plan.slice_begin = ps.slice_begin.data();
  ps.plan.rowB = ps.rowB.data();
  ps.plan.first_gB = ps.first_gB.data();
  ps.plan.rowC = ps.rowC.data();
  ps.plan.first_gC = ps.first_gC.data();
}

ss::Problem make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A_c, const at::Tensor& B,
                         const at::Tensor& C, const at::Tensor* D_c, const OptTensor& z, const at::Tensor* db_c,
                         bool softplus) {
  ss::Problem p;
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.L = u.size(2);
  p.N = A_c.size(1);
  p.nchunks = (p.L + kCkpt - 1) / kCkpt;
  p.u = view3(u);
  p.delta = view3(delta);
  if (z.has_value()) p.z = view3(*z);
  p.A = A_c.data_ptr<float>();
  p.B = view4(B, p.dim);
  p.C = view4(C, p.dim);
  p.D = D_c != nullptr ? D_c->data_ptr<float>() : nullptr;
  p.delta_bias = db_c != nullptr ? db_c->data_ptr<float>() : nullptr;
  p.softplus = softplus;
  return p;
}

// sum over the batch of a (batch, rest...) float32 tensor, in batch order.
at::Tensor sum_batch(const at::Tensor& part) {
  const int64_t batch = part.size(0), n = part.numel() / batch;
  auto out = at::empty(part.sizes().slice(1), part.options());
  const float* p = part.data_ptr<float>();
  float* o = out.data_ptr<float>();
  std::memcpy(o, p, sizeof(float) * n);
  for (int64_t b = 1; b < batch; ++b)
    for (int64_t i = 0; i < n; ++i) o[i] += p[b * n + i];
  return out;
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> selective_scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                      const Tensor& B, const Tensor& C, const OptTensor& D,
                                                      const OptTensor& z, const OptTensor& delta_bias,
                                                      bool delta_softplus) {
  check_args("selective_scan_fwd", u, delta, A, B, C, D, z, delta_bias);
  const int64_t batch = u.size(0), dim = u.size(1), L = u.size(2), N = A.size(1);
  const int64_t nchunks = (L + kCkpt - 1) / kCkpt;
  const auto A_c = A.contiguous();
  const at::Tensor D_c = D.has_value() ? D->contiguous() : at::Tensor();
  const at::Tensor db_c = delta_bias.has_value() ? delta_bias->contiguous() : at::Tensor();
  auto f32 = u.options().dtype(at::kFloat);
  auto out = at::empty({batch, dim, L}, u.options());
  auto last = at::empty({batch, dim, N}, f32);
  auto ckpt = at::empty({batch, dim, nchunks, N}, f32);

  const ss::Problem p = make_problem(u, delta, A_c, B, C, D.has_value() ? &D_c : nullptr, z,
                                     delta_bias.has_value() ? &db_c : nullptr, delta_softplus);
  PlanStore ps;
  make_plan(batch, dim, p.B.cpg, p.C.cpg, ps);
  ss::FwdOut o;
  o.out = out3(out);
  o.last = last.data_ptr<float>();
  o.ckpt = ckpt.data_ptr<float>();
  switch (selected_isa()) {
    case Isa::kAvx512: ss::forward_avx512(p, ps.plan, o); break;
    case Isa::kAvx2: ss::forward_avx2(p, ps.plan, o); break;
    default: ss::forward_baseline(p, ps.plan, o); break;
  }
  return {out, last, ckpt};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_bwd(
    const Tensor& dout, const OptTensor& dlast_state, const Tensor& u, const Tensor& delta, const Tensor& A,
    const Tensor& B, const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
    bool delta_softplus, const Tensor& checkpoints) {
  const char* op = "selective_scan_bwd";
  check_args(op, u, delta, A, B, C, D, z, delta_bias);
  const int64_t batch = u.size(0), dim = u.size(1), L = u.size(2), N = A.size(1);
  const int64_t nchunks = (L + kCkpt - 1) / kCkpt;
  TORCH_CHECK(dout.device().is_cpu() && checkpoints.device().is_cpu(), op, ": dout and checkpoints must be CPU tensors");
  TORCH_CHECK_VALUE(dout.sizes() == u.sizes(), op, ": dout must have u's shape ", u.sizes(), ", got ", dout.sizes());
  TORCH_CHECK_TYPE(dout.scalar_type() == u.scalar_type(), op, ": dout must have u's dtype");
  TORCH_CHECK_VALUE(checkpoints.scalar_type() == at::kFloat &&
                        checkpoints.sizes() == at::IntArrayRef({batch, dim, nchunks, N}),
                    op, ": checkpoints must be float32 (", batch, ", ", dim, ", ", nchunks, ", ", N, "), got ",
                    checkpoints.sizes());
  at::Tensor dlast_c;
  if (dlast_state.has_value()) {
    TORCH_CHECK(dlast_state->device().is_cpu(), op, ": dlast_state must be a CPU tensor");
    TORCH_CHECK_VALUE(dlast_state->sizes() == at::IntArrayRef({batch, dim, N}), op,
                      ": dlast_state must be (batch, dim, N)");
    dlast_c = dlast_state->to(at::kFloat).contiguous();
  }
  const auto ckpt_c = checkpoints.contiguous();
  const auto A_c = A.contiguous();
  const at::Tensor D_c = D.has_value() ? D->contiguous() : at::Tensor();
  const at::Tensor db_c = delta_bias.has_value() ? delta_bias->contiguous() : at::Tensor();
  auto f32 = u.options().dtype(at::kFloat);

  const ss::Problem p = make_problem(u, delta, A_c, B, C, D.has_value() ? &D_c : nullptr, z,
                                     delta_bias.has_value() ? &db_c : nullptr, delta_softplus);
  PlanStore ps;
  make_plan(batch, dim, p.B.cpg, p.C.cpg, ps);
  const int64_t GB = B.size(1), GC = C.size(1);

  auto du = at::empty({batch, dim, L}, u.options());
  auto ddelta = at::empty({batch, dim, L}, delta.options());
  auto dz = z.has_value() ? at::empty({batch, dim, L}, z->options()) : at::empty({0}, f32);
  // float32 accumulators; the kernel sums the slices' partial rows into them window by window.
  auto dB32 = at::empty({batch, GB, N, L}, f32);
  auto dC32 = at::empty({batch, GC, N, L}, f32);
  auto dA_part = at::empty({batch, dim, N}, f32);
  auto dD_part = at::empty({batch, dim}, f32);
  auto db_part = at::empty({batch, dim}, f32);

  ss::BwdIO io;
  io.dout = view3(dout);
  io.dlast = dlast_state.has_value() ? dlast_c.data_ptr<float>() : nullptr;
  io.ckpt = ckpt_c.data_ptr<float>();
  io.du = out3(du);
  io.ddelta = out3(ddelta);
  if (z.has_value()) io.dz = out3(dz);
  io.dB = dB32.data_ptr<float>();
  io.dC = dC32.data_ptr<float>();
  io.dA_part = dA_part.data_ptr<float>();
  io.dD_part = dD_part.data_ptr<float>();
  io.dbias_part = db_part.data_ptr<float>();
  switch (selected_isa()) {
    case Isa::kAvx512: ss::backward_avx512(p, ps.plan, io); break;
    case Isa::kAvx2: ss::backward_avx2(p, ps.plan, io); break;
    default: ss::backward_baseline(p, ps.plan, io); break;
  }

  auto dB = dB32.to(B.scalar_type());
  auto dC = dC32.to(C.scalar_type());
  auto dA = sum_batch(dA_part);
  auto dD = D.has_value() ? sum_batch(dD_part) : at::empty({0}, f32);
  auto ddb = delta_bias.has_value() ? sum_batch(db_part) : at::empty({0}, f32);
  return {du, ddelta, dA, dB, dC, dD, dz, ddb};
}

}  // namespace cpu
}  // namespace hands3c
