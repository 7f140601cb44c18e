// Host-side interface of the CUDA kernels: plain structs of pointers, sizes and strides, and
// the launcher functions that run every kernel of one operator in order.
//
// This header includes neither torch nor CUDA headers, so the torch bindings (*.cpp, compiled
// by the host compiler) and the kernels (*.cu, compiled by nvcc) share it, and the CPU
// emulation build (emu/) compiles the very same launchers with g++.  Every launcher checks
// cudaGetLastError() after each launch and stops at the first failure; the bindings turn a
// failed LaunchStatus into a TORCH_CHECK error naming the kernel.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace hands3c {
namespace cuda {

// Element types the kernels read and write (state and accumulation are always float32).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Steps between stored scan states (checkpoints); fixed by the operator contracts.
constexpr int64_t kCheckpointStride = 64;
// Largest state size.
constexpr int64_t kMaxStateSize = 64;

struct LaunchStatus {
  int error = 0;                  // cudaError_t value, 0 = success
  const char* kernel = nullptr;   // the kernel whose launch failed
  const char* message = nullptr;  // cudaGetErrorString of the error
};

// A (batch, channel, step) view: element (b, d, l) lives at p[b*sb + d*sd + l*sl] (element
// strides; l is a *position*: the cross scan maps its traversal steps to positions).
struct View3 {
  const void* p = nullptr;
  int dtype = kFloat32;
  int64_t sb = 0, sd = 0, sl = 0;
};

// Per-position vectors shared by a group of channels (B, C, the cross scan's dt_low):
// element i of batch b, direction k, channel group g at position l lives at
// p[b*sb + k*sk + (g/gdiv)*sg + i*si + l*sl].  Strides may be 0 (broadcast views).  The
// problem's groups G are the finest grouping of B's and C's (lcm of their group counts); gdiv
// is how many of them one group of this tensor spans.
struct VecView {
  const void* p = nullptr;
  int dtype = kFloat32;
  int64_t sb = 0, sk = 0, sg = 0, si = 0, sl = 0;
  int64_t gdiv = 1;
};

// One scan problem.  The selective scan is K = 1 direction over the identity traversal; the
// cross scan is K = 4 directions over a P x Q plane (SPEC §2), delta = dt_projs_weight @ dt_low.
struct ScanProblem {
  int64_t batch = 0;
  int64_t K = 1;      // directions
  int64_t D = 0;      // channels per direction
  int64_t L = 0;      // positions (= steps per direction)
  int64_t P = 1, Q = 0;  // the plane (cross scan)
  int64_t N = 0;      // state size, 1..64
  int64_t R = 0;      // dt rank (cross scan only)
  int64_t G = 1;      // channel groups sharing B/C (D % G == 0); the cross scan has 1
  bool cross = false;
  bool softplus = false;
  View3 u;            // input, any dtype
  View3 delta;        // selective scan only (same dtype family as u)
  View3 z;            // selective scan gate, p == nullptr when absent
  VecView Bv, Cv;     // B and C
  VecView dtl;        // cross scan: dt_low (R values per position and direction)
  const float* A = nullptr;           // (K*D, N): A itself (the cross scan passes -exp(A_logs))
  const float* Dskip = nullptr;       // (K*D) or null
  const float* delta_bias = nullptr;  // (K*D) or null
  const float* w = nullptr;           // cross scan: dt_projs_weight (K, D, R), contiguous
};

// Work decomposition chosen on the host (see plan_scan in scan_common.cu and README.md).
struct ScanPlan {
  int nmax = 0;        // compiled state size (N rounded up to 1, 4, 8, 16 or 64)
  int TD = 32;         // channels per block (= threads per block)
  int64_t cpg = 0;     // channels per group
  int64_t tpg = 0;     // channel tiles per group
  int64_t dtiles = 0;  // channel tiles in all (G * tpg)
  int64_t nchunks = 0; // ceil(L / 64)
  int64_t cps = 0;     // 64-step chunks per segment
  int64_t nseg = 1;    // segments per sequence (> 1: chunked scan with a carry pass)
  int64_t ks = 1;      // blocks per (batch, segment, tile) along directions: 1 (a block walks
                       // all K directions) or K (one direction per block)
  int64_t grid = 0;    // blocks of the scan kernels
  int TS = 32;         // forward: steps staged per tile
  int TB = 8;          // backward: steps per recomputed sub-tile
  int F = 1;           // backward: steps between flushes of the per-position reductions
  int nc = 0;          // floats per staged position vector: R + 2 * nmax
  int ncr = 0;         // reduced values per step: (cross ? R : 0) + 2N
  // Shared-memory layouts, offsets in floats.
  int f_pos = 0, f_u = 0, f_dl = 0, f_z = 0, f_bc = 0, f_w = 0, f_total = 0;
  int b_pos = 0, b_u = 0, b_dl = 0, b_z = 0, b_do = 0, b_y = 0, b_bc = 0, b_w = 0, b_dw = 0,
      b_hist = 0, b_red = 0, b_total = 0;
};

struct ScanFwdIO {
  void* out = nullptr;  // (batch, D, L) contiguous; the cross scan sums its K directions here
  int out_dtype = kFloat32;
  float* last_state = nullptr;  // (batch, D, N) or null (selective scan)
  float* ckpt = nullptr;        // (batch, K, D, nchunks, N)
};

struct ScanBwdIO {
  View3 dout;                   // (batch, D, L)
  const float* dlast = nullptr; // (batch, D, N) or null (K == 1 only)
  const float* ckpt = nullptr;  // (batch, K, D, nchunks, N)
  void* du = nullptr;           // (batch, D, L) contiguous, summed over directions
  int du_dtype = kFloat32;
  void* ddelta = nullptr;       // selective scan: (batch, D, L) contiguous
  int ddelta_dtype = kFloat32;
  void* dz = nullptr;           // selective scan with z: (batch, D, L) contiguous
  int dz_dtype = kFloat32;
  void* dB = nullptr;           // selective scan: (batch, G / Bv.gdiv, N, L) contiguous
  int dB_dtype = kFloat32;
  void* dC = nullptr;           // (batch, G / Cv.gdiv, N, L) contiguous
  int dC_dtype = kFloat32;
  float* ddbl = nullptr;        // cross scan: (batch, L, K, R + 2N) contiguous
  float* dA = nullptr;          // (K*D, N): gradient with respect to A
  float* dD = nullptr;          // (K*D) or null
  float* ddelta_bias = nullptr; // (K*D) or null
  float* dw = nullptr;          // cross scan: (K, D, R)
};

// Chooses the decomposition.  `target_threads` is the number of scan threads that fills the
// device (the bindings pass 512 per SM, about what the forward's registers let be resident, or
// HANDS3C_CUDA_TARGET_THREADS when set).
ScanPlan plan_scan(const ScanProblem& pb, int64_t target_threads);
// Shared memory (bytes) the plan needs and the largest any device of sm_80+ gives a block.
size_t scan_fwd_smem_bytes(const ScanPlan& pl);
size_t scan_bwd_smem_bytes(const ScanPlan& pl);

// Workspace sizes in floats; the caller passes a float32 buffer of at least that size.
int64_t scan_fwd_workspace(const ScanProblem& pb, const ScanPlan& pl);
int64_t scan_bwd_workspace(const ScanProblem& pb, const ScanPlan& pl);

LaunchStatus scan_forward(const ScanProblem& pb, const ScanPlan& pl, const ScanFwdIO& io, float* workspace,
                          void* stream);
LaunchStatus scan_backward(const ScanProblem& pb, const ScanPlan& pl, const ScanBwdIO& io, float* workspace,
                           void* stream);

// S3C merge: LayerNorm(y_spatial + y_channel) * silu(z) over rows of C values.
// A row view addresses row r (0 <= r < M) by decomposing r over up to 7 leading sizes.
struct RowView {
  const void* p = nullptr;
  int dtype = kFloat32;
  int nlead = 0;
  int64_t sizes[7] = {0, 0, 0, 0, 0, 0, 0};
  int64_t strides[7] = {0, 0, 0, 0, 0, 0, 0};
  int64_t sc = 1;  // stride of the last (normalised) dimension
};

struct MergeProblem {
  int64_t M = 0, C = 0;
  RowView ys, yc, z;
  const float* weight = nullptr;
  const float* bias = nullptr;
  float eps = 1e-5f;
};

// Blocks of the backward (their partial weight/bias sums are reduced in block order).
int64_t merge_bwd_blocks(const MergeProblem& mp);
// Workspace floats of the backward: per-block partial sums of dweight and dbias.
int64_t merge_bwd_workspace(const MergeProblem& mp);
size_t merge_bwd_smem_bytes(const MergeProblem& mp);

LaunchStatus merge_forward(const MergeProblem& mp, float* out, float* mean, float* rstd, void* stream);
// dout: (M, C) float32 contiguous; dy (M, C) f32 and dz (M, C) in dz_dtype, contiguous.
LaunchStatus merge_backward(const MergeProblem& mp, const float* dout, const float* mean, const float* rstd,
                            float* dy, void* dz, int dz_dtype, float* dweight, float* dbias, float* workspace,
                            void* stream);

// Device facts the planners need (the emulation build answers with fixed values).
int device_sm_count(int device);
size_t device_max_smem_optin(int device);

}  // namespace cuda
}  // namespace hands3c
