// Shared pieces of the CUDA operator bindings (*_cuda_bind.cpp): the device the argument
// checks (hands3c/op_checks.h) expect, dtype tags,
// the current stream, conversions from tensors to the launchers' views (launch.h), and
// turning a failed launch into a TORCH_CHECK error.
//
// The same binding sources also build the CPU emulation library (HS3C_EMULATE, see emu/ and
// tests/test_cuda_emulated.py): there the kernels run on the host, the tensors are CPU
// tensors, and the kernels are registered for the CPU key of the `hands3c_emu` namespace
// (schemas defined by the test from the real ones), leaving `hands3c` untouched.
#pragma once

// Per-operator ATen headers instead of <ATen/ATen.h>: this halves the compile time of each
// binding file (CI has two cores).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/matmul.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include "cuda/launch.h"
#include "hands3c/op_checks.h"

#if defined(HS3C_EMULATE)
#define HS3C_BIND_LIB hands3c_emu
#define HS3C_BIND_KEY CPU
#else
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define HS3C_BIND_LIB hands3c
#define HS3C_BIND_KEY CUDA
#endif

namespace hands3c {
namespace cuda {
namespace bind {

using at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

#if defined(HS3C_EMULATE)
struct DeviceGuard {
  explicit DeviceGuard(const Tensor&) {}
};
inline void* current_stream(const Tensor&) { return nullptr; }
inline int device_index(const Tensor&) { return 0; }
// constexpr, not inline: an inline variable is one (GNU unique) symbol across every loaded
// library, so the emulation library would see the CUDA extension's target when both load.
constexpr checks::Target kTarget{c10::DeviceType::CPU, "CPU (emulation build)"};
#else
struct DeviceGuard {
  explicit DeviceGuard(const Tensor& t) : guard(t.device()) {}
  c10::cuda::CUDAGuard guard;
};
inline void* current_stream(const Tensor& t) {
  return static_cast<void*>(c10::cuda::getCurrentCUDAStream(t.get_device()).stream());
}
inline int device_index(const Tensor& t) { return t.get_device(); }
constexpr checks::Target kTarget{c10::DeviceType::CUDA, "CUDA"};  // constexpr: see above
#endif

// Argument checks live in hands3c/op_checks.h (shared with the CPU registrations); every
// operator calls its checks::*(op, kTarget, ...) before reading any tensor.

using checks::opt;
using checks::present;
static_assert(checks::kCheckpointStride == kCheckpointStride && checks::kMaxState == kMaxStateSize,
              "hands3c/op_checks.h and cuda/launch.h disagree on the checkpoint stride or the state size limit");

inline int dtype_tag(const Tensor& t, const char* op, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return kFloat32;
    case at::kHalf: return kFloat16;
    case at::kBFloat16: return kBFloat16;
    default:
      TORCH_CHECK(false, op, ": ", name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return kFloat32;
}

inline void check_f32(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
}

inline void check_launch(const LaunchStatus& st) {
  TORCH_CHECK(st.error == 0, "hands3c: CUDA kernel ", st.kernel, " failed: ", st.message, " (cudaError ", st.error,
              ")");
}

// Scan threads that fill the device: HANDS3C_CUDA_TARGET_THREADS (a tuning and testing knob:
// 1 gives the fewest, longest-running blocks, a huge value forces the per-direction and
// segmented paths) or 512 per SM.
inline int64_t target_threads(const Tensor& t) {
  if (const char* env = std::getenv("HANDS3C_CUDA_TARGET_THREADS")) {
    const long long v = std::atoll(env);
    if (v > 0) return v;
  }
  return 512 * (int64_t)device_sm_count(device_index(t));
}

// HANDS3C_CUDA_POISON=1 fills outputs with NaN before the kernels run, so tests catch any
// element a kernel fails to write.
inline void poison(Tensor& t) {
  const char* env = std::getenv("HANDS3C_CUDA_POISON");
  if (env != nullptr && std::string(env) == "1" && t.defined() && t.numel() > 0)
    t.fill_(std::numeric_limits<float>::quiet_NaN());
}

inline View3 view3(const Tensor& t, const char* op, const char* name) {
  View3 v;
  v.p = t.data_ptr();
  v.dtype = dtype_tag(t, op, name);
  v.sb = t.stride(0);
  v.sd = t.stride(1);
  v.sl = t.stride(2);
  return v;
}

inline Tensor empty_f32(at::IntArrayRef sizes, const Tensor& like) {
  return at::empty(sizes, like.options().dtype(at::kFloat));
}

}  // namespace bind
}  // namespace cuda
}  // namespace hands3c
