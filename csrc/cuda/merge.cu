// CUDA kernels of the S3C merge, out = LayerNorm(y_spatial + y_channel) * silu(z) over the
// last dimension (hands3c::s3c_merge_fwd / s3c_merge_bwd), and their launchers.
//
// One block of kThreads threads per row (grid-stride over rows); row sums are fixed-order
// shared-memory tree reductions.  The inputs may be arbitrary strided views (the S3C block
// passes permuted branch outputs): a row's offset is decoded from its index.  The backward's
// weight/bias gradients are accumulated per block in shared memory (each column owned by one
// thread) and the per-block partials summed in block order: deterministic, no atomics.
#include "cuda/scan_common.cuh"

namespace hands3c {
namespace cuda {

namespace {
constexpr int kThreads = 128;  // a power of two (tree reduction)
constexpr int64_t kMaxFwdBlocks = 1 << 16;
constexpr int64_t kMaxBwdBlocks = 512;
}  // namespace

HS3C_DEV int64_t row_offset(const RowView& v, int64_t r) {
  int64_t off = 0;
  for (int i = v.nlead - 1; i >= 0; --i) {
    const int64_t q = r / v.sizes[i];
    off += (r - q * v.sizes[i]) * v.strides[i];
    r = q;
  }
  return off;
}

// Sum of `v` over the block, in a fixed tree order; every thread gets the result.
HS3C_DEV float block_sum(float v, float* red) {
  const int t = (int)threadIdx.x;
  __syncthreads();  // earlier readers of red[0] are done
  red[t] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    __syncthreads();
  }
  return red[0];
}

__global__ void __launch_bounds__(kThreads) merge_fwd_kernel(MergeProblem mp, float* out, float* mean, float* rstd) {
  HS3C_DYN_SMEM(smem);
  const int t = (int)threadIdx.x;
  const int64_t C = mp.C;
  const float invC = 1.0f / (float)C;
  for (int64_t r = blockIdx.x; r < mp.M; r += gridDim.x) {
    const int64_t os = row_offset(mp.ys, r), oc = row_offset(mp.yc, r), oz = row_offset(mp.z, r);
    float s = 0.f;
    for (int64_t c = t; c < C; c += kThreads)
      s += load_f(mp.ys.p, kFloat32, os + c * mp.ys.sc) + load_f(mp.yc.p, kFloat32, oc + c * mp.yc.sc);
    const float mu = block_sum(s, smem) * invC;
    float v = 0.f;
    for (int64_t c = t; c < C; c += kThreads) {
      const float x = load_f(mp.ys.p, kFloat32, os + c * mp.ys.sc) + load_f(mp.yc.p, kFloat32, oc + c * mp.yc.sc);
      v += (x - mu) * (x - mu);
    }
    const float rs = 1.0f / sqrtf(block_sum(v, smem) * invC + mp.eps);
    if (t == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
    for (int64_t c = t; c < C; c += kThreads) {
      const float x = load_f(mp.ys.p, kFloat32, os + c * mp.ys.sc) + load_f(mp.yc.p, kFloat32, oc + c * mp.yc.sc);
      const float zz = load_f(mp.z.p, mp.z.dtype, oz + c * mp.z.sc);
      out[r * C + c] = hands3c::math::merge_apply(x, mu, rs, mp.weight[c], mp.bias[c], zz);
    }
  }
}

// part: [2][gridDim.x][C] (dweight partials, then dbias partials).
__global__ void __launch_bounds__(kThreads) merge_bwd_kernel(MergeProblem mp, const float* dout, const float* mean,
                                                             const float* rstd, float* dy, void* dz, int dz_dtype,
                                                             float* part) {
  HS3C_DYN_SMEM(smem);
  const int t = (int)threadIdx.x;
  const int64_t C = mp.C;
  float* red = smem;
  float* s_dw = smem + kThreads;
  float* s_db = s_dw + C;
  float* s_xh = s_db + C;
  float* s_dxh = s_xh + C;
  const float invC = 1.0f / (float)C;
  // Column c belongs to thread c % kThreads in every loop below, so the per-column arrays
  // need no barriers.
  for (int64_t c = t; c < C; c += kThreads) {
    s_dw[c] = 0.f;
    s_db[c] = 0.f;
  }
  for (int64_t r = blockIdx.x; r < mp.M; r += gridDim.x) {
    const int64_t os = row_offset(mp.ys, r), oc = row_offset(mp.yc, r), oz = row_offset(mp.z, r);
    const float mu = mean[r], rs = rstd[r];
    float s1 = 0.f, s2 = 0.f;
    for (int64_t c = t; c < C; c += kThreads) {
      const float x = load_f(mp.ys.p, kFloat32, os + c * mp.ys.sc) + load_f(mp.yc.p, kFloat32, oc + c * mp.yc.sc);
      const float xh = (x - mu) * rs;
      const float zz = load_f(mp.z.p, mp.z.dtype, oz + c * mp.z.sc);
      const float go = dout[r * C + c];
      const float w = mp.weight[c];
      const float ln = xh * w + mp.bias[c];
      store_f(dz, dz_dtype, r * C + c, go * ln * hands3c::math::silu_grad_f(zz));
      const float dln = go * hands3c::math::silu_f(zz);  // gradient of the LayerNorm output
      s_dw[c] += dln * xh;
      s_db[c] += dln;
      const float dxh = dln * w;
      s_xh[c] = xh;
      s_dxh[c] = dxh;
      s1 += dxh;
      s2 += dxh * xh;
    }
    const float S1 = block_sum(s1, red) * invC;
    const float S2 = block_sum(s2, red) * invC;
    for (int64_t c = t; c < C; c += kThreads) dy[r * C + c] = rs * (s_dxh[c] - S1 - s_xh[c] * S2);
  }
  const int64_t nblk = gridDim.x;
  for (int64_t c = t; c < C; c += kThreads) {
    part[(int64_t)blockIdx.x * C + c] = s_dw[c];
    part[(nblk + blockIdx.x) * C + c] = s_db[c];
  }
}

int64_t merge_bwd_blocks(const MergeProblem& mp) { return mp.M < kMaxBwdBlocks ? mp.M : kMaxBwdBlocks; }

int64_t merge_bwd_workspace(const MergeProblem& mp) { return 2 * merge_bwd_blocks(mp) * mp.C; }

size_t merge_bwd_smem_bytes(const MergeProblem& mp) { return (size_t)(kThreads + 4 * mp.C) * sizeof(float); }

LaunchStatus merge_forward(const MergeProblem& mp, float* out, float* mean, float* rstd, void* stream) {
  if (mp.M == 0) return {};
  const int64_t blocks = mp.M < kMaxFwdBlocks ? mp.M : kMaxFwdBlocks;
  HS3C_LAUNCH(merge_fwd_kernel, dim3((unsigned)blocks), dim3(kThreads), kThreads * sizeof(float), stream, mp, out,
              mean, rstd);
  HS3C_CHECK_LAUNCH("hands3c::merge_fwd_kernel");
  return {};
}

LaunchStatus merge_backward(const MergeProblem& mp, const float* dout, const float* mean, const float* rstd, float* dy,
                            void* dz, int dz_dtype, float* dweight, float* dbias, float* workspace, void* stream) {
  if (mp.M == 0) return {};
  const int64_t blocks = merge_bwd_blocks(mp);
  const size_t smem = merge_bwd_smem_bytes(mp);
  if (smem > 48 * 1024) {
    cudaFuncSetAttribute(merge_bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    HS3C_CHECK_LAUNCH("hands3c::merge_bwd_kernel (shared memory attribute)");
  }
  HS3C_LAUNCH(merge_bwd_kernel, dim3((unsigned)blocks), dim3(kThreads), smem, stream, mp, dout, mean, rstd, dy, dz,
              dz_dtype, workspace);
  HS3C_CHECK_LAUNCH("hands3c::merge_bwd_kernel");
  LaunchStatus st = launch_reduce(workspace, blocks, mp.C, dweight, kFloat32, false, stream);
  if (st.error) return st;
  return launch_reduce(workspace + blocks * mp.C, blocks, mp.C, dbias, kFloat32, false, stream);
}

}  // namespace cuda
}  // namespace hands3c
