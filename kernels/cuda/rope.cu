// RoPE: blocks along the tokens (grid.x) and the token's q and k heads (grid.y, kHeadsPerBlock
// each, so a decode step of a few tokens still spreads over the GPU); a block computes cos/sin of
// the token's angles into shared memory (full-precision sincosf on the same float angle the CPU
// reference uses), then rotates its heads.

#include "core/check.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rope.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxHalf = 512;
constexpr int kHeadsPerBlock = 4;

__device__ __forceinline__ void rotate(bf16* x, int i, int half, float c, float s) {
  const float a = __bfloat162float(x[i]);
  const float b = __bfloat162float(x[i + half]);
  x[i] = __float2bfloat16_rn(a * c - b * s);
  x[i + half] = __float2bfloat16_rn(b * c + a * s);
}

__global__ void __launch_bounds__(kThreads)
    rope_kernel(StridedRows q, StridedRows k, const int32_t* positions, const float* inv_freq,
                int64_t inv_freq_row_stride, int half, float scaling) {
  __shared__ float cos_s[kMaxHalf], sin_s[kMaxHalf];
  const int64_t t = blockIdx.x;
  const float position = static_cast<float>(positions[t]);
  const float* freq = inv_freq + t * inv_freq_row_stride;
  for (int i = threadIdx.x; i < half; i += kThreads) {
    float s, c;
    sincosf(position * freq[i], &s, &c);
    cos_s[i] = c * scaling;
    sin_s[i] = s * scaling;
  }
  __syncthreads();
  const int q_heads = static_cast<int>(q.sizes[1]);
  const int k_heads = static_cast<int>(k.sizes[1]);
  const int first = blockIdx.y * kHeadsPerBlock;
  const int heads = min(kHeadsPerBlock, q_heads + k_heads - first);
  for (int w = threadIdx.x; w < heads * half; w += kThreads) {
    const int head = first + w / half, i = w % half;
    bf16* x = head < q_heads
                  ? static_cast<bf16*>(q.data) + q.row_offset(t * q_heads + head)
                  : static_cast<bf16*>(k.data) + k.row_offset(t * k_heads + head - q_heads);
    rotate(x, i, half, cos_s[i], sin_s[i]);
  }
}

}  // namespace

void launch_rope(const StridedRows& q, const StridedRows& k, const int32_t* positions,
                 const float* inv_freq, int64_t inv_freq_row_stride, int half,
                 float attention_scaling, cudaStream_t stream) {
  const int64_t tokens = q.sizes[0];
  if (tokens == 0 || half == 0) return;
  SIEVE_CHECK_LE(half, kMaxHalf) << "rotary half-dimension";
  const int64_t heads = q.sizes[1] + k.sizes[1];
  const dim3 grid(static_cast<unsigned>(tokens),
                  static_cast<unsigned>((heads + kHeadsPerBlock - 1) / kHeadsPerBlock));
  rope_kernel<<<grid, kThreads, 0, stream>>>(
      q, k, positions, inv_freq, inv_freq_row_stride, half, attention_scaling);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
