#pragma once
// SwiGLU activation launcher (plain C++), bf16.

#include <cuda_runtime.h>

#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, f + i] for i < f = out.row_size.
void launch_silu_mul(const StridedRows& out, const StridedRows& gate_up, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
