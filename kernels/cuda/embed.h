#pragma once
// Row gather launcher (plain C++): token embeddings, and the LM head's row selection.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// out[i, :] = table[ids[i], :] for i < num_ids; elements of `elem_bytes` bytes (2 or 4). An id
// outside [0, table rows) is a bug upstream: the kernel reports it and traps.
void launch_embed(const int32_t* ids, int64_t num_ids, const StridedRows& table,
                  const StridedRows& out, int elem_bytes, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
