// Argument blocks of the selective-scan CPU kernels (selective_scan_kernel.h, compiled once per
// instruction set in selective_scan_isa_*.cpp) and their entry points.  Torch-free on purpose:
// the host side (selective_scan_cpu.cpp) turns tensors into these plain views, so the
// per-ISA translation units stay small and never instantiate ATen templates under a
// `#pragma GCC target`.
#pragma once

#include <cstdint>

namespace hands3c {
namespace cpu {
namespace ss {

// Element types of u/delta/z/dout and of B/C; the kernels convert to float on load.
enum class DType : int32_t { kFloat = 0, kHalf = 1, kBFloat16 = 2 };

// A (batch, dim, L) strided view: element [b, d, l] at p + b*sb + d*sd + l*sl (in elements).
struct View3 {
  const void* p = nullptr;
  DType t = DType::kFloat;
  int64_t sb = 0, sd = 0, sl = 0;
};

// A (batch, G, N, L) strided view of B or C; channel d reads group d / cpg.  Any stride may be
// 0 (the wrapper expands (dim, N) and (batch, N, L) forms without copying).
struct View4 {
  const void* p = nullptr;
  DType t = DType::kFloat;
  int64_t sb = 0, sg = 0, sn = 0, sl = 0;
  int64_t G = 1, cpg = 1;
};

// A contiguous (batch, dim, L) output in the inputs' dtype.
struct Out3 {
  void* p = nullptr;
  DType t = DType::kFloat;
};

struct Problem {
  int64_t batch = 0, dim = 0, L = 0, N = 0, nchunks = 0;
  View3 u, delta, z;             // z.p == nullptr when z is absent
  const float* A = nullptr;      // (dim, N) contiguous
  View4 B, C;
  const float* D = nullptr;      // (dim) or nullptr
  const float* delta_bias = nullptr;
  bool softplus = false;
};

// Work decomposition, computed from the shapes only (never from the thread count) so that the
// backward's reductions add the same numbers in the same order on any number of threads.
//   Blocks: channels [block_d0[i], block_d0[i] + block_nl[i]), at most 16 (one SIMD lane each).
//   Slices: blocks [slice_begin[s], slice_begin[s+1]), the unit of one backward task.
//   uniform: every block's lanes read a single B group and a single C group (B, C loads are
//     scalar broadcasts, and a slice may sum its blocks lane-wise before reducing lanes).
//   Partial rows of dB: slice s writes group g (first_gB[s] <= g) to row rowB[s] + g - first_gB[s]
//     of a (batch, nrowsB, N, window) scratch buffer; likewise for dC.  Group g of dB is the sum of
//     rows grpB_rows[grpB_begin[g] .. grpB_begin[g+1]) in that (slice) order.
struct Plan {
  bool uniform = false;
  int64_t nblocks = 0;
  const int64_t* block_d0 = nullptr;
  const int32_t* block_nl = nullptr;
  int64_t nslices = 0;
  const int64_t* slice_begin = nullptr;  // nslices + 1 entries
  const int64_t* rowB = nullptr;
  const int64_t* first_gB = nullptr;
  int64_t nrowsB = 0;
  const int64_t* grpB_begin = nullptr;  // G_B + 1 entries
  const int64_t* grpB_rows = nullptr;   // nrowsB entries
  const int64_t* rowC = nullptr;
  const int64_t* first_gC = nullptr;
  int64_t nrowsC = 0;
  const int64_t* grpC_begin = nullptr;
  const int64_t* grpC_rows = nullptr;
};

struct FwdOut {
  Out3 out;                // (batch, dim, L)
  float* last = nullptr;   // (batch, dim, N)
  float* ckpt = nullptr;   // (batch, dim, nchunks, N): the state before step 64 c
};

struct BwdIO {
  View3 dout;
  const float* dlast = nullptr;  // (batch, dim, N) contiguous or nullptr
  const float* ckpt = nullptr;
  Out3 du, ddelta, dz;            // dz.p == nullptr when z is absent
  float* dB = nullptr;            // (batch, G_B, N, L) float32 contiguous
  float* dC = nullptr;            // (batch, G_C, N, L) float32 contiguous
  float* dA_part = nullptr;       // (batch, dim, N): summed over batch by the host
  float* dD_part = nullptr;       // (batch, dim)
  float* dbias_part = nullptr;    // (batch, dim)
};

void forward_avx512(const Problem& p, const Plan& plan, const FwdOut& o);
void forward_avx2(const Problem& p, const Plan& plan, const FwdOut& o);
void forward_baseline(const Problem& p, const Plan& plan, const FwdOut& o);
void backward_avx512(const Problem& p, const Plan& plan, const BwdIO& io);
void backward_avx2(const Problem& p, const Plan& plan, const BwdIO& io);
void backward_baseline(const Problem& p, const Plan& plan, const BwdIO& io);

}  // namespace ss
}  // namespace cpu
}  // namespace hands3c
