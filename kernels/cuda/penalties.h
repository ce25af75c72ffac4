#pragma once
// Penalties launcher (plain C++): repetition, frequency and presence penalties and token masks in
// place on f32 logits rows (PenaltyArgs in kernels/backend.h).

#include <cuda_runtime.h>

#include <cstdint>

namespace sieve::kernels::cuda {

// Device pointers; row r's tokens are entries [token_indptr[r], token_indptr[r + 1]).
struct PenaltyParams {
  float* logits = nullptr;  // [num_rows, vocab], rows `logits_stride` apart
  int64_t logits_stride = 0;
  int num_rows = 0;
  int vocab = 0;
  const int32_t* token_indptr = nullptr;  // [num_rows + 1]
  const int32_t* token_ids = nullptr;     // unique within a row
  const int32_t* output_counts = nullptr;
  const uint8_t* flags = nullptr;             // kPenaltySeen | kPenaltyMask
  const float* repetition_penalty = nullptr;  // [num_rows]
  const float* frequency_penalty = nullptr;   // [num_rows]
  const float* presence_penalty = nullptr;    // [num_rows]
};

// Bit-identical to the CPU backend's apply_penalties: every step is one rounded f32 operation.
void launch_apply_penalties(const PenaltyParams& params, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
