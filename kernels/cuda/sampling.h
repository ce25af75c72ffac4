#pragma once
// Sampling launcher (plain C++): one token per sequence from f32 logits.

#include <cuda_runtime.h>

#include <cstdint>

namespace sieve::kernels::cuda {

// Device pointers, one entry per sequence (SampleArgs' fields).
struct SampleParams {
  const float* logits = nullptr;  // [num_seqs, vocab], rows `logits_stride` apart
  int64_t logits_stride = 0;
  int num_seqs = 0;
  int vocab = 0;
  const float* temperature = nullptr;  // 0 = greedy
  const int32_t* top_k = nullptr;      // <= 0 = off
  const float* top_p = nullptr;        // 1 = off
  const float* min_p = nullptr;        // 0 = off
  const int64_t* seeds = nullptr;
  const int64_t* steps = nullptr;
  int32_t* out_tokens = nullptr;
  // Scratch of num_seqs · kArgmaxSlices keys: each row's maximum is first found by many blocks.
  unsigned long long* slice_max = nullptr;
};

inline constexpr int kArgmaxSlices = 32;

// Greedy (first argmax) or temperature / top-k / top-p / min-p sampling with the CPU backend's
// draw u = sample_uniform(seed, step), so both backends pick the same token but for rounding at
// a boundary.
void launch_sample(const SampleParams& params, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
