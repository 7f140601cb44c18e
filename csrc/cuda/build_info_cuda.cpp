// Build record of handS3C._C_cuda: the torch, its CUDA and the CUDA toolkit this extension was
// compiled against (format and readers: csrc/include/hands3c/build_info.h).
// CUDART_VERSION comes from the toolkit's own header, i.e. the toolkit that compiled the kernels,
// which can differ from the CUDA torch was built with.
#include <cuda_runtime_api.h>

#include "hands3c/build_info.h"

extern "C" __attribute__((used, visibility("default"))) const char hands3c_build_info_cuda[] =
    "HANDS3C_BUILD_INFO:{\"extension\":\"handS3C._C_cuda\"," HANDS3C_BUILD_INFO_TORCH_HEADERS
    ",\"cudart\":" HS3C_STR(CUDART_VERSION) ",\"compiler\":\"" __VERSION__ "\"," HANDS3C_BUILD_INFO_FIELDS "}";
