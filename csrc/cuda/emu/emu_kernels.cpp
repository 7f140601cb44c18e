// The CUDA kernels and launchers of csrc/cuda/*.cu compiled as plain C++ for the CPU
// emulation (emu.h): one translation unit holding their exact source.  Built only by
// tests/test_cuda_emulated.py, never by setup.py (it globs csrc/cuda/*.cu and *.cpp only).
#ifndef HS3C_EMULATE
#error "emu_kernels.cpp is the emulation build: compile it with -DHS3C_EMULATE"
#endif

#include "cuda/scan_common.cu"
#include "cuda/scan_fwd.cu"
#include "cuda/scan_bwd.cu"
#include "cuda/merge.cu"
