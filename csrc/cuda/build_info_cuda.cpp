// Build record of handS3C._C_cuda: the torch, its CUDA and the CUDA toolkit this extension was
// compiled against (format and readers: csrc/bindings/build_info.cpp, handS3C/_build_info.py).
// CUDART_VERSION comes from the toolkit's own header, i.e. the toolkit that compiled the kernels,
// which can differ from the CUDA torch was built with.
#include <cuda_runtime_api.h>
#include <torch/version.h>

#if __has_include("hands3c_build_info.h")
#include "hands3c_build_info.h"
#else
#define HANDS3C_BUILD_INFO_FIELDS "\"builder\":\"no setup.py record\""
#endif

#define HS3C_STR_(x) #x
#define HS3C_STR(x) HS3C_STR_(x)

extern "C" __attribute__((used, visibility("default"))) const char hands3c_build_info_cuda[] =
    "HANDS3C_BUILD_INFO:{\"extension\":\"handS3C._C_cuda\",\"torch_headers\":\"" HS3C_STR(TORCH_VERSION_MAJOR) "." HS3C_STR(
        TORCH_VERSION_MINOR) "." HS3C_STR(TORCH_VERSION_PATCH) "\",\"cudart\":" HS3C_STR(CUDART_VERSION)
    ",\"compiler\":\"" __VERSION__ "\"," HANDS3C_BUILD_INFO_FIELDS "}";
