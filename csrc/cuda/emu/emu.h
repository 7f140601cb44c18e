// CPU emulation of the small part of CUDA the HandS3C kernels use (compat.cuh), so that their
// exact source runs on machines without a GPU (tests/test_cuda_emulated.py).
//
// Every CUDA thread of a block is a coroutine (ucontext) on one OS thread.  Blocks run one
// after another; inside a block, the scheduler runs each thread until it reaches
// __syncthreads() or returns, then starts the next round once every thread has arrived.  A
// block in which some threads wait at a barrier while others have returned is reported as an
// error (on a GPU that is undefined behaviour).  Dynamic shared memory is filled with NaN
// before every block, so a kernel that reads shared memory it did not write produces NaN.
//
// Only for the emulation build (HS3C_EMULATE); never compiled into the CUDA extension.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct hs3c_uint3 {
  unsigned x, y, z;
};

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
typedef void* cudaStream_t;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? 1 : 227 * 1024;
  return cudaSuccess;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

namespace hs3c_emu {

struct Thread {
  ucontext_t ctx;
  hs3c_uint3 idx;
  int state;  // 0 runnable, 1 waiting at a barrier, 2 returned
};

struct Runtime {
  std::vector<Thread> threads;
  std::vector<char> stacks;
  std::vector<float> smem;
  ucontext_t scheduler;
  hs3c_uint3 block_idx{0, 0, 0};
  hs3c_uint3 block_dim{1, 1, 1};
  hs3c_uint3 grid_dim{1, 1, 1};
  int current = 0;
  std::function<void()> body;
  static constexpr size_t kStack = 256 * 1024;
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}

inline float* dynamic_smem() { return rt().smem.data(); }

inline void syncthreads() {
  Runtime& r = rt();
  Thread& th = r.threads[r.current];
  th.state = 1;
  swapcontext(&th.ctx, &r.scheduler);
}

inline void trampoline() {
  Runtime& r = rt();
  r.body();
  r.threads[r.current].state = 2;
  // returning resumes uc_link (the scheduler)
}

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, A&&... args) {
  Runtime& r = rt();
  // Arguments are copied into the kernel's parameter types, as a CUDA launch does.
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  r.body = [&]() { std::apply(kernel, params); };
  const size_t nthreads = (size_t)block.x * block.y * block.z;
  r.threads.assign(nthreads, Thread{});
  if (r.stacks.size() < nthreads * Runtime::kStack) r.stacks.assign(nthreads * Runtime::kStack, 0);
  r.block_dim = {block.x, block.y, block.z};
  r.grid_dim = {grid.x, grid.y, grid.z};
  const float nan = std::nanf("");
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        r.block_idx = {bx, by, bz};
        r.smem.assign(smem_bytes / sizeof(float) + 1, nan);
        for (size_t i = 0; i < nthreads; ++i) {
          Thread& th = r.threads[i];
          th.idx = {(unsigned)(i % block.x), (unsigned)((i / block.x) % block.y), (unsigned)(i / ((size_t)block.x * block.y))};
          th.state = 0;
          getcontext(&th.ctx);
          th.ctx.uc_stack.ss_sp = r.stacks.data() + i * Runtime::kStack;
          th.ctx.uc_stack.ss_size = Runtime::kStack;
          th.ctx.uc_link = &r.scheduler;
          makecontext(&th.ctx, trampoline, 0);
        }
        for (;;) {
          for (size_t i = 0; i < nthreads; ++i) {
            if (r.threads[i].state != 0) continue;
            r.current = (int)i;
            swapcontext(&r.scheduler, &r.threads[i].ctx);
          }
          size_t waiting = 0, done = 0;
          for (const Thread& th : r.threads) (th.state == 1 ? waiting : done)++;
          if (waiting == 0) break;
          if (done != 0)
            throw std::runtime_error("hs3c emulation: __syncthreads() reached by only part of a block (block " +
                                     std::to_string(bx) + ")");
          for (Thread& th : r.threads) th.state = 0;
        }
      }
}

}  // namespace hs3c_emu

#define threadIdx (::hs3c_emu::rt().threads[::hs3c_emu::rt().current].idx)
#define blockIdx (::hs3c_emu::rt().block_idx)
#define blockDim (::hs3c_emu::rt().block_dim)
#define gridDim (::hs3c_emu::rt().grid_dim)
#define __syncthreads() ::hs3c_emu::syncthreads()
