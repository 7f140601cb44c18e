// Build record of handS3C._C: the torch (and its CUDA) this extension was compiled against
// (format and readers: csrc/include/hands3c/build_info.h).
#include "hands3c/build_info.h"

// `used` keeps the otherwise unreferenced array through optimisation.
extern "C" __attribute__((used, visibility("default"))) const char hands3c_build_info_cpu[] =
    "HANDS3C_BUILD_INFO:{\"extension\":\"handS3C._C\"," HANDS3C_BUILD_INFO_TORCH_HEADERS
    ",\"compiler\":\"" __VERSION__ "\"," HANDS3C_BUILD_INFO_FIELDS "}";
