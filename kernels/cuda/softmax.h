#pragma once
// Row softmax launcher (plain C++), f32 or bf16, in place.

#include <cuda_runtime.h>

#include "core/dtype.h"
#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// x[r] = softmax(x[r]) per row; dtype kF32 or kBF16; sums in f32.
void launch_softmax(const StridedRows& x, DType dtype, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
