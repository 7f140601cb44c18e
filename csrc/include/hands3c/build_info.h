// The parts of an extension's build record (handS3C._C: csrc/bindings/build_info.cpp,
// handS3C._C_cuda: csrc/cuda/build_info_cuda.cpp) that both share.
//
// The record is a NUL-terminated string "HANDS3C_BUILD_INFO:{json}" kept in the library's
// read-only data.  handS3C/_build_info.py finds it in the file's bytes without loading the
// library, so an extension that no longer loads into the running torch (missing symbols) can
// still say which torch it was built for; handS3C/_ext.py compares it with the running torch at
// import.  The torch version comes twice: from the headers actually compiled against
// (torch/version.h) and, in full (local tag, git revision, torch's CUDA), from the header
// setup.py generates (hands3c_build_info.h).  A build without that header (the CMake build)
// records the header version only, and the import check then has nothing to compare.
#pragma once

#include <torch/version.h>

#if __has_include("hands3c_build_info.h")
#include "hands3c_build_info.h"
#else
#define HANDS3C_BUILD_INFO_FIELDS "\"builder\":\"no setup.py record\""
#endif

#define HS3C_STR_(x) #x
#define HS3C_STR(x) HS3C_STR_(x)

// "torch_headers":"<major>.<minor>.<patch>" of the torch headers this file is compiled against.
#define HANDS3C_BUILD_INFO_TORCH_HEADERS                                                        \
  "\"torch_headers\":\"" HS3C_STR(TORCH_VERSION_MAJOR) "." HS3C_STR(TORCH_VERSION_MINOR) "." \
      HS3C_STR(TORCH_VERSION_PATCH) "\""
