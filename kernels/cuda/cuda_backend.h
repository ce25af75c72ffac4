#pragma once
// The CUDA backend. Plain C++ header: no CUDA types, so host code builds without nvcc.
// (Skeleton: device discovery compiles and runs; the ops arrive with the CUDA backend issue.)

#include <memory>

#include "kernels/backend.h"

namespace sieve::kernels::cuda {

// Number of visible CUDA devices; 0 when there is no driver or no device.
int device_count();

// A backend on `device`; an error if it cannot be initialised.
StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device);

}  // namespace sieve::kernels::cuda
