#pragma once
// Device checks (plain C++); device_count() is declared in cuda_backend.h.

#include <string>

namespace sieve::kernels::cuda {

// Empty when this build's kernels can run on the current device, else the CUDA error text (a GPU
// of an architecture the build did not target).
std::string kernel_image_error();

}  // namespace sieve::kernels::cuda
