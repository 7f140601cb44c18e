// The Python module object of handS3C._C_cuda.  It exposes nothing itself: importing it runs
// the static registrations of the CUDA kernels of the hands3c operators (*_cuda_bind.cpp).
// The schemas come from handS3C._C, which handS3C/_ext.py imports first.  Importing needs no
// GPU (the CUDA runtime is only called when a kernel runs).
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr,
                                          nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}
