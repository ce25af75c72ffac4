#pragma once
// Small-M GEMMs (decode steps of a few sequences) as bandwidth-bound GEMVs (plain C++ header).

#include <cuda_runtime.h>

#include "kernels/cuda/gemm.h"

namespace sieve::kernels::cuda {

// The most rows of x the GEMV kernel takes; larger M goes to cuBLASLt.
inline constexpr int kGemvMaxRows = 4;

// Runs y = x·wᵀ (+ bias) with the GEMV kernel when the problem suits it (m <= kGemvMaxRows,
// 16-byte aligned rows of x and w, k a multiple of 8); returns false, launching nothing, when not.
bool launch_gemv(const GemmProblem& problem, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
