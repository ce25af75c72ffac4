// Penalties and token masks: one block per row, one thread per listed token (a row's tokens are
// unique, so no two threads write one logit). The arithmetic is spelled out in round-to-nearest
// intrinsics so that nvcc cannot fuse freq * count + pres into an FMA: the result then equals the
// CPU backend's bit for bit, and so does the token a greedy draw picks after it.

#include <cmath>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/penalties.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) apply_penalties_kernel(PenaltyParams p) {
  const int r = blockIdx.x;
  const int begin = p.token_indptr[r];
  const int end = p.token_indptr[r + 1];
  if (begin == end) return;
  float* logits = p.logits + r * p.logits_stride;
  const float rep = p.repetition_penalty[r];
  const float freq = p.frequency_penalty[r];
  const float pres = p.presence_penalty[r];
  for (int i = begin + static_cast<int>(threadIdx.x); i < end; i += kThreads) {
    const int token = p.token_ids[i];
    if (token < 0 || token >= p.vocab) continue;
    const int count = p.output_counts[i];
    const uint8_t flags = p.flags[i];
    float x = logits[token];
    if ((flags & kPenaltySeen) && rep != 1.0f) x = x > 0 ? __fdiv_rn(x, rep) : __fmul_rn(x, rep);
    if (count > 0 && (freq != 0.0f || pres != 0.0f)) {
      x = __fsub_rn(x, __fadd_rn(__fmul_rn(freq, __int2float_rn(count)), pres));
    }
    if (flags & kPenaltyMask) x = -INFINITY;
    logits[token] = x;
  }
}

}  // namespace

void launch_apply_penalties(const PenaltyParams& params, cudaStream_t stream) {
  if (params.num_rows == 0) return;
  apply_penalties_kernel<<<static_cast<unsigned>(params.num_rows), kThreads, 0, stream>>>(params);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
