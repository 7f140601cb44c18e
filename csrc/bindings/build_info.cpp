// Build record of handS3C._C: the torch (and its CUDA) this extension was compiled against.
//
// The record is a NUL-terminated string "HANDS3C_BUILD_INFO:{json}" kept in the library's
// read-only data.  handS3C/_build_info.py finds it in the file's bytes without loading the
// library, so an extension that no longer loads into the running torch (missing symbols) can
// still say which torch it was built for; handS3C/_ext.py compares it with the running torch at
// import.  The torch version comes twice: from the headers actually compiled against
// (torch/version.h) and, in full (local tag, git revision, torch's CUDA), from the header
// setup.py generates (hands3c_build_info.h).  A build without that header (the CMake build)
// records the header version only, and the import check then has nothing to compare.
#include <torch/version.h>

#if __has_include("hands3c_build_info.h")
#include "hands3c_build_info.h"
#else
#define HANDS3C_BUILD_INFO_FIELDS "\"builder\":\"no setup.py record\""
#endif

#define HS3C_STR_(x) #x
#define HS3C_STR(x) HS3C_STR_(x)

// `used` keeps the otherwise unreferenced array through optimisation.
extern "C" __attribute__((used, visibility("default"))) const char hands3c_build_info_cpu[] =
    "HANDS3C_BUILD_INFO:{\"extension\":\"handS3C._C\",\"torch_headers\":\"" HS3C_STR(TORCH_VERSION_MAJOR) "." HS3C_STR(
        TORCH_VERSION_MINOR) "." HS3C_STR(TORCH_VERSION_PATCH) "\",\"compiler\":\"" __VERSION__
    "\"," HANDS3C_BUILD_INFO_FIELDS "}";
