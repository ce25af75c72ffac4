#pragma once
// RMSNorm launchers (plain C++). Activations and the weight are bf16; sums are f32.

#include <cuda_runtime.h>

#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// out[r] = x[r] / rms(x[r]) * weight, per row; out may be x (in place).
void launch_rms_norm(const StridedRows& out, const StridedRows& x, const void* weight, float eps,
                     cudaStream_t stream);

// residual[r] += x[r] (stored rounded to bf16); out[r] = rms_norm(residual[r]) * weight.
void launch_add_rms_norm(const StridedRows& out, const StridedRows& residual,
                         const StridedRows& x, const void* weight, float eps,
                         cudaStream_t stream);

}  // namespace sieve::kernels::cuda
