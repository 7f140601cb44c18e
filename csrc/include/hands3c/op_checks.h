// Argument checks of every registered `hands3c` operator, shared by the CPU registrations
// (csrc/bindings/*_cpu_bind.cpp) and the CUDA ones (csrc/cuda/*_bind.cpp, also built as the CPU
// emulation library).  Each check runs before any kernel reads a pointer, so that no input of a
// registered operator can make a kernel read or write outside its tensors: rank, every
// dimension against the others, dtype, device, and the layout the kernels assume (dense
// strided tensors, no lazy negation bit).  Messages name the operator, the argument and what
// was expected.  Shape and device errors are ValueError in Python (TORCH_CHECK_VALUE), dtype
// and layout errors TypeError (TORCH_CHECK_TYPE), like the Python wrappers in handS3C/ops/.
//
// The returned structs carry the sizes the checks established, so a binding reads them from
// one place instead of re-deriving them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <c10/util/OptionalArrayRef.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>

namespace hands3c {
namespace checks {

using at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

// Both backends keep the scan state at the start of every 64-step chunk and hold at most 64
// state entries per channel (csrc/cpu/*_cpu.cpp, csrc/cuda/launch.h).
constexpr int64_t kCheckpointStride = 64;
constexpr int64_t kMaxState = 64;
// The merge's CUDA row view holds at most 7 leading dimensions.
constexpr int64_t kMergeMaxDims = 8;

// Held for the duration of an operator's kernel: the ATen calls inside it (the projection
// GEMMs) run in the operator's own precision, float32.  Without it a call under
// torch.autocast would let autocast turn those inner matmuls into bfloat16 / float16 ones,
// whose results the kernels then misread as float32 buffers.
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

// The device kind a registration's kernels run on, and how messages call it.
struct Target {
  c10::DeviceType type;
  const char* what;  // e.g. "CPU", "CUDA", "CPU (emulation build)"
};

struct Arg {
  const char* name;
  const Tensor* t;  // null or undefined: an absent optional argument
};

inline const Tensor* opt(const OptTensor& t) { return t.has_value() ? &t.value() : nullptr; }
inline bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

inline bool is_scan_float(at::ScalarType s) { return s == at::kFloat || s == at::kHalf || s == at::kBFloat16; }

// Every present argument: dense strided memory the kernels can index, on the registration's
// device kind, all on one device.
inline void check_tensors(const char* op, const Target& target, std::initializer_list<Arg> args) {
  const Arg* first = nullptr;
  for (const Arg& a : args) {
    if (a.t == nullptr || !a.t->defined()) continue;
    const Tensor& t = *a.t;
    TORCH_CHECK_TYPE(t.layout() == c10::kStrided, op, ": ", a.name, " must be a dense (strided) tensor, got layout ",
                     t.layout());
    TORCH_CHECK_TYPE(!t.is_neg() && !t.is_conj(), op, ": ", a.name,
                     " is a lazily negated or conjugated view; call .resolve_neg() / .resolve_conj() first");
    TORCH_CHECK_VALUE(t.device().type() == target.type, op, ": expected ", target.what, " tensors, but ", a.name,
                      " is on ", t.device());
    if (first == nullptr) {
      first = &a;
    } else {
      TORCH_CHECK_VALUE(t.device() == first->t->device(), op, ": all tensors must be on one device, but ",
                        first->name, " is on ", first->t->device(), " and ", a.name, " is on ", t.device());
    }
  }
}

inline void check_f32(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
}

inline void check_scan_float(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK_TYPE(is_scan_float(t.scalar_type()), op, ": ", name, " must be float32, float16 or bfloat16, got ",
                   t.scalar_type());
}

inline void check_shape(const char* op, const char* name, const Tensor& t, at::IntArrayRef want) {
  TORCH_CHECK_VALUE(t.sizes() == want, op, ": ", name, " must have shape ", want, ", got ", t.sizes());
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- cross_scan_fwd / cross_scan_bwd ----------------------------------------------------------

struct CrossScanDims {
  int64_t B = 0, D = 0, P = 0, Q = 0, L = 0, R = 0, N = 0, C = 0, nchunks = 0;
};

inline CrossScanDims cross_scan_params(const char* op, const Tensor& u, const Tensor& xw, const Tensor& dtw,
                                       const Tensor& dtb, const Tensor& alog, const Tensor& ds) {
  TORCH_CHECK_VALUE(u.dim() == 4, op, ": u must have shape (B, D, P, Q), got ", u.sizes());
  check_scan_float(op, "u", u);
  CrossScanDims d;
  d.B = u.size(0);
  d.D = u.size(1);
  d.P = u.size(2);
  d.Q = u.size(3);
  TORCH_CHECK_VALUE(d.B >= 1 && d.D >= 1 && d.P >= 1 && d.Q >= 1, op, ": u must have no empty dimension, got ",
                    u.sizes());
  d.L = d.P * d.Q;
  TORCH_CHECK_VALUE(d.L <= std::numeric_limits<int32_t>::max(), op, ": the plane P*Q must have < 2^31 positions, got ",
                    d.L);
  check_f32(op, "dt_projs_weight", dtw);
  TORCH_CHECK_VALUE(dtw.dim() == 3 && dtw.size(0) == 4 && dtw.size(1) == d.D, op,
                    ": dt_projs_weight must have shape (4, D=", d.D, ", R), got ", dtw.sizes());
  d.R = dtw.size(2);
  check_f32(op, "A_logs", alog);
  TORCH_CHECK_VALUE(alog.dim() == 2 && alog.size(0) == 4 * d.D, op, ": A_logs must have shape (4*D=", 4 * d.D,
                    ", N), got ", alog.sizes());
  d.N = alog.size(1);
  TORCH_CHECK_VALUE(d.N >= 1 && d.N <= kMaxState, op, ": the state size N (A_logs.shape[1]) must be in 1..",
                    kMaxState, ", got ", d.N);
  d.C = d.R + 2 * d.N;
  check_f32(op, "x_proj_weight", xw);
  check_shape(op, "x_proj_weight", xw, {4, d.C, d.D});
  check_f32(op, "dt_projs_bias", dtb);
  check_shape(op, "dt_projs_bias", dtb, {4, d.D});
  check_f32(op, "Ds", ds);
  check_shape(op, "Ds", ds, {4 * d.D});
  d.nchunks = ceil_div(d.L, kCheckpointStride);
  return d;
}

inline CrossScanDims cross_scan_fwd(const char* op, const Target& target, const Tensor& u, const Tensor& xw,
                                    const Tensor& dtw, const Tensor& dtb, const Tensor& alog, const Tensor& ds) {
  check_tensors(op, target, {{"u", &u}, {"x_proj_weight", &xw}, {"dt_projs_weight", &dtw}, {"dt_projs_bias", &dtb},
                             {"A_logs", &alog}, {"Ds", &ds}});
  return cross_scan_params(op, u, xw, dtw, dtb, alog, ds);
}

inline CrossScanDims cross_scan_bwd(const char* op, const Target& target, const Tensor& dout, const Tensor& u,
                                    const Tensor& xw, const Tensor& dtw, const Tensor& dtb, const Tensor& alog,
                                    const Tensor& ds, const Tensor& dbl, const Tensor& ckpt) {
  check_tensors(op, target, {{"dout", &dout}, {"u", &u}, {"x_proj_weight", &xw}, {"dt_projs_weight", &dtw},
                             {"dt_projs_bias", &dtb}, {"A_logs", &alog}, {"Ds", &ds}, {"dbl", &dbl},
                             {"checkpoints", &ckpt}});
  const CrossScanDims d = cross_scan_params(op, u, xw, dtw, dtb, alog, ds);
  check_scan_float(op, "dout", dout);
  check_shape(op, "dout (u's shape)", dout, u.sizes());
  check_f32(op, "dbl", dbl);
  check_shape(op, "dbl (B, L, 4, R+2N)", dbl, {d.B, d.L, 4, d.C});
  check_f32(op, "checkpoints", ckpt);
  check_shape(op, "checkpoints (B, 4, D, ceil(L/64), N)", ckpt, {d.B, 4, d.D, d.nchunks, d.N});
  return d;
}

// cross_scan_fwd's out_order: the memory order of y's logical (B, D, P, Q) dimensions, outermost
// first (y.permute(out_order) is contiguous).  Absent: (0, 1, 2, 3), the contiguous layout.
// Returned as the validated permutation.
inline std::array<int64_t, 4> cross_scan_out_order(const char* op, const at::OptionalIntArrayRef& out_order) {
  std::array<int64_t, 4> order{0, 1, 2, 3};
  if (!out_order.has_value()) return order;
  const at::IntArrayRef o = *out_order;
  TORCH_CHECK_VALUE(o.size() == 4, op, ": out_order must be a permutation of (0, 1, 2, 3) (the memory order of ",
                    "y's (B, D, P, Q) dimensions, outermost first), got ", o.size(), " values ", o);
  bool seen[4] = {false, false, false, false};
  for (size_t i = 0; i < 4; ++i) {
    TORCH_CHECK_VALUE(o[i] >= 0 && o[i] < 4 && !seen[o[i]], op,
                      ": out_order must be a permutation of (0, 1, 2, 3) (the memory order of y's (B, D, P, Q) ",
                      "dimensions, outermost first), got ", o);
    seen[o[i]] = true;
    order[i] = o[i];
  }
  return order;
}

// ---- selective_scan_fwd / selective_scan_bwd --------------------------------------------------

struct SelectiveScanDims {
  int64_t batch = 0, dim = 0, L = 0, N = 0, GB = 0, GC = 0, nchunks = 0;
};

inline SelectiveScanDims selective_scan_params(const char* op, const Tensor& u, const Tensor& delta, const Tensor& A,
                                               const Tensor& B, const Tensor& C, const OptTensor& D,
                                               const OptTensor& z, const OptTensor& delta_bias) {
  TORCH_CHECK_VALUE(u.dim() == 3, op, ": u must have shape (batch, dim, L), got ", u.sizes());
  check_scan_float(op, "u", u);
  SelectiveScanDims s;
  s.batch = u.size(0);
  s.dim = u.size(1);
  s.L = u.size(2);
  TORCH_CHECK_VALUE(s.batch >= 1 && s.dim >= 1 && s.L >= 1, op, ": u must have no empty dimension, got ", u.sizes());
  TORCH_CHECK_VALUE(s.L <= std::numeric_limits<int32_t>::max(), op, ": L must be below 2^31, got ", s.L);
  check_shape(op, "delta (u's shape)", delta, u.sizes());
  TORCH_CHECK_TYPE(delta.scalar_type() == u.scalar_type(), op, ": delta must have u's dtype ", u.scalar_type(),
                   ", got ", delta.scalar_type());
  TORCH_CHECK_TYPE(!A.is_complex(), op, ": complex A is not supported (A has dtype ", A.scalar_type(), ")");
  check_f32(op, "A", A);
  TORCH_CHECK_VALUE(A.dim() == 2 && A.size(0) == s.dim, op, ": A must have shape (dim=", s.dim, ", N), got ",
                    A.sizes());
  s.N = A.size(1);
  TORCH_CHECK_VALUE(s.N >= 1 && s.N <= kMaxState, op, ": the state size N (A.shape[1]) must be in 1..", kMaxState,
                    ", got ", s.N);
  for (const Arg& m : {Arg{"B", &B}, Arg{"C", &C}}) {
    check_scan_float(op, m.name, *m.t);
    TORCH_CHECK_VALUE(m.t->dim() == 4 && m.t->size(0) == s.batch && m.t->size(1) >= 1 && s.dim % m.t->size(1) == 0 &&
                          m.t->size(2) == s.N && m.t->size(3) == s.L,
                      op, ": ", m.name, " must be (batch=", s.batch, ", G, N=", s.N, ", L=", s.L,
                      ") with G groups dividing dim=", s.dim, ", got shape ", m.t->sizes());
  }
  s.GB = B.size(1);
  s.GC = C.size(1);
  for (const Arg& o : {Arg{"D", opt(D)}, Arg{"delta_bias", opt(delta_bias)}}) {
    if (o.t == nullptr || !o.t->defined()) continue;
    check_f32(op, o.name, *o.t);
    check_shape(op, o.name, *o.t, {s.dim});
  }
  if (present(z)) {
    check_shape(op, "z (u's shape)", *z, u.sizes());
    TORCH_CHECK_TYPE(z->scalar_type() == u.scalar_type(), op, ": z must have u's dtype ", u.scalar_type(), ", got ",
                     z->scalar_type());
  }
  s.nchunks = ceil_div(s.L, kCheckpointStride);
  return s;
}

inline SelectiveScanDims selective_scan_fwd(const char* op, const Target& target, const Tensor& u,
                                            const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                                            const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias) {
  check_tensors(op, target, {{"u", &u}, {"delta", &delta}, {"A", &A}, {"B", &B}, {"C", &C}, {"D", opt(D)},
                             {"z", opt(z)}, {"delta_bias", opt(delta_bias)}});
  return selective_scan_params(op, u, delta, A, B, C, D, z, delta_bias);
}

inline SelectiveScanDims selective_scan_bwd(const char* op, const Target& target, const Tensor& dout,
                                            const OptTensor& dlast_state, const Tensor& u, const Tensor& delta,
                                            const Tensor& A, const Tensor& B, const Tensor& C, const OptTensor& D,
                                            const OptTensor& z, const OptTensor& delta_bias, const Tensor& ckpt) {
  check_tensors(op, target, {{"dout", &dout}, {"dlast_state", opt(dlast_state)}, {"u", &u}, {"delta", &delta},
                             {"A", &A}, {"B", &B}, {"C", &C}, {"D", opt(D)}, {"z", opt(z)},
                             {"delta_bias", opt(delta_bias)}, {"checkpoints", &ckpt}});
  const SelectiveScanDims s = selective_scan_params(op, u, delta, A, B, C, D, z, delta_bias);
  check_shape(op, "dout (u's shape)", dout, u.sizes());
  TORCH_CHECK_TYPE(dout.scalar_type() == u.scalar_type(), op, ": dout must have u's dtype ", u.scalar_type(),
                   ", got ", dout.scalar_type());
  if (present(dlast_state)) {
    check_f32(op, "dlast_state", *dlast_state);
    check_shape(op, "dlast_state (batch, dim, N)", *dlast_state, {s.batch, s.dim, s.N});
  }
  check_f32(op, "checkpoints", ckpt);
  check_shape(op, "checkpoints (batch, dim, ceil(L/64), N)", ckpt, {s.batch, s.dim, s.nchunks, s.N});
  return s;
}

// ---- s3c_merge_fwd / s3c_merge_bwd ------------------------------------------------------------

struct MergeDims {
  int64_t C = 0, M = 0;  // normalised dimension, rows
};

inline MergeDims merge_params(const char* op, const Tensor& ys, const Tensor& yc, const Tensor& z,
                              const Tensor& weight, const Tensor& bias) {
  TORCH_CHECK_VALUE(ys.dim() >= 1 && ys.dim() <= kMergeMaxDims, op, ": y_spatial must have 1 to ", kMergeMaxDims,
                    " dimensions, got shape ", ys.sizes());
  check_f32(op, "y_spatial", ys);
  check_f32(op, "y_channel", yc);
  check_scan_float(op, "z", z);
  check_shape(op, "y_channel (y_spatial's shape)", yc, ys.sizes());
  check_shape(op, "z (y_spatial's shape)", z, ys.sizes());
  MergeDims m;
  m.C = ys.size(-1);
  TORCH_CHECK_VALUE(m.C >= 1, op, ": the last (normalised) dimension of y_spatial must be non-empty, got shape ",
                    ys.sizes());
  m.M = ys.numel() / m.C;
  check_f32(op, "weight", weight);
  check_shape(op, "weight (C,)", weight, {m.C});
  check_f32(op, "bias", bias);
  check_shape(op, "bias (C,)", bias, {m.C});
  return m;
}

inline MergeDims merge_fwd(const char* op, const Target& target, const Tensor& ys, const Tensor& yc, const Tensor& z,
                           const Tensor& weight, const Tensor& bias, double eps) {
  check_tensors(op, target, {{"y_spatial", &ys}, {"y_channel", &yc}, {"z", &z}, {"weight", &weight},
                             {"bias", &bias}});
  const MergeDims m = merge_params(op, ys, yc, z, weight, bias);
  TORCH_CHECK_VALUE(eps > 0 && std::isfinite(eps), op, ": eps must be a positive finite number, got ", eps);
  return m;
}

inline MergeDims merge_bwd(const char* op, const Target& target, const Tensor& dout, const Tensor& ys,
                           const Tensor& yc, const Tensor& z, const Tensor& weight, const Tensor& bias,
                           const Tensor& mean, const Tensor& rstd) {
  check_tensors(op, target, {{"dout", &dout}, {"y_spatial", &ys}, {"y_channel", &yc}, {"z", &z},
                             {"weight", &weight}, {"bias", &bias}, {"mean", &mean}, {"rstd", &rstd}});
  const MergeDims m = merge_params(op, ys, yc, z, weight, bias);
  check_scan_float(op, "dout", dout);
  check_shape(op, "dout (y_spatial's shape)", dout, ys.sizes());
  check_f32(op, "mean", mean);
  check_shape(op, "mean (one value per row)", mean, {m.M});
  check_f32(op, "rstd", rstd);
  check_shape(op, "rstd (one value per row)", rstd, {m.M});
  return m;
}

}  // namespace checks
}  // namespace hands3c
