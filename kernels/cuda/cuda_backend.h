#pragma once
// The CUDA backend: bf16 weights, activations and KV cache (an f32 KV arena is accepted too),
// f32 accumulation, f32 logits and sampling; cuBLASLt GEMMs and the kernels of kernels/cuda.
// Plain C++ header: no CUDA types, so host code builds without nvcc.

#include <memory>

#include "kernels/backend.h"

namespace sieve::kernels::cuda {

// Number of visible CUDA devices; 0 when there is no driver or no device (never aborts).
int device_count();

// A backend on `device`; an error (never an abort) when the device cannot be used: no such
// device, a GPU this build has no kernels for, out of memory for the cuBLAS workspace.
StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device);

}  // namespace sieve::kernels::cuda
