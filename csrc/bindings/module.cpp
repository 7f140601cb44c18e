// The Python module object of handS3C._C.  It exposes nothing itself: importing it runs the
// static registrations of the hands3c operators (schemas.cpp, *_cpu_bind.cpp).
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr,
                                          nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}
