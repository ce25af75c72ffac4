#pragma once
// Device checks (plain C++); device_count() is declared in cuda_backend.h.

#include <string>

namespace sieve::kernels::cuda {

// Empty when this build's kernels can run on the current device, else the CUDA error text (a GPU
// of an architecture the build did not target).
std::string kernel_image_error();

// Whether kernels are launched with programmatic dependent launch (launch.cuh): on GPUs of
// compute capability 9.0 and later, unless SIEVE_PDL=0 in the environment (for side-by-side
// measurements and for ruling it out when chasing a race). Decided once per process.
bool pdl_enabled();

}  // namespace sieve::kernels::cuda
