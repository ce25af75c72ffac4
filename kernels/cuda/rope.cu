// RoPE: blocks along the tokens (grid.x) and, for steps of few tokens, along the token's q and k
// heads too (grid.y, so a decode step still spreads over the GPU); a block computes cos/sin of the
// token's angles into shared memory (full-precision sincosf on the same float angle the CPU
// reference uses), then rotates its heads.

#include "core/check.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_write.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/rope.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxHalf = 512;
constexpr int kFewTokens = 64;  // below this, a block takes 4 heads of a token, else all of them

__device__ __forceinline__ void rotate(bf16* x, int i, int half, float c, float s) {
  const float a = __bfloat162float(x[i]);
  const float b = __bfloat162float(x[i + half]);
  x[i] = __float2bfloat16_rn(a * c - b * s);
  x[i + half] = __float2bfloat16_rn(b * c + a * s);
}

// With kWrite, the block then stores its KV heads of the token (the rotated K rows and the V rows,
// whole heads: `k_rows`/`v_rows`, of which `k` is the rotary part) into the token's cache slot,
// which saves a decode step one launch per layer.
template <bool kWrite, typename KvT, int kVec>
__global__ void __launch_bounds__(kThreads)
    rope_kernel(StridedRows q, StridedRows k, const int32_t* positions, const float* inv_freq,
                int64_t inv_freq_row_stride, int half, float scaling, int heads_per_block,
                StridedRows k_rows, StridedRows v_rows, const int32_t* slot_mapping, KvArena arena,
                TokenFormats formats, int layer) {
  __shared__ float cos_s[kMaxHalf], sin_s[kMaxHalf];
  wait_for_prior_kernels();
  allow_next_kernel();
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
  const int first = blockIdx.y * heads_per_block;
  const int heads = min(heads_per_block, q_heads + k_heads - first);
  for (int w = threadIdx.x; w < heads * half; w += kThreads) {
    const int head = first + w / half, i = w % half;
    bf16* x = head < q_heads
                  ? static_cast<bf16*>(q.data) + q.row_offset(t * q_heads + head)
                  : static_cast<bf16*>(k.data) + k.row_offset(t * k_heads + head - q_heads);
    rotate(x, i, half, cos_s[i], sin_s[i]);
  }
  if constexpr (kWrite) {
    __syncthreads();  // the block's rotated K rows, written above, are visible to all its threads
    const int first_kv = max(first, q_heads) - q_heads;
    write_kv_heads<KvT, kVec>(k_rows, v_rows, t, first_kv, first + heads - q_heads - first_kv,
                              slot_mapping[t], arena, formats, layer);
  }
}

// Blocks: one per token, split over its heads when there are few tokens.
dim3 rope_grid(const StridedRows& q, const StridedRows& k, int* heads_per_block) {
  const int64_t tokens = q.sizes[0];
  const int heads = static_cast<int>(q.sizes[1] + k.sizes[1]);
  *heads_per_block = tokens < kFewTokens ? 4 : heads;
  return dim3(static_cast<unsigned>(tokens),
              static_cast<unsigned>((heads + *heads_per_block - 1) / *heads_per_block));
}

}  // namespace

void launch_rope(const StridedRows& q, const StridedRows& k, const int32_t* positions,
                 const float* inv_freq, int64_t inv_freq_row_stride, int half,
                 float attention_scaling, cudaStream_t stream) {
  if (q.sizes[0] == 0 || half == 0) return;
  SIEVE_CHECK_LE(half, kMaxHalf) << "rotary half-dimension";
  int heads_per_block = 0;
  const dim3 grid = rope_grid(q, k, &heads_per_block);
  launch_pdl(rope_kernel<false, bf16, 1>, grid, kThreads, 0, stream, q, k, positions, inv_freq,
             inv_freq_row_stride, half, attention_scaling, heads_per_block, StridedRows{},
             StridedRows{}, nullptr, KvArena{}, TokenFormats{}, 0);
}

void launch_rope_write_kv(const StridedRows& q, const StridedRows& k, const int32_t* positions,
                          const float* inv_freq, int64_t inv_freq_row_stride, int half,
                          float attention_scaling, const StridedRows& k_rows,
                          const StridedRows& v_rows, const int32_t* slot_mapping,
                          const KvArena& arena, const TokenFormats& formats, int layer,
                          cudaStream_t stream) {
  if (q.sizes[0] == 0) return;
  SIEVE_CHECK_LE(half, kMaxHalf) << "rotary half-dimension";
  int heads_per_block = 0;
  const dim3 grid = rope_grid(q, k, &heads_per_block);
  dispatch_kv_write(k_rows, v_rows, arena, [&](auto instance) {
    using I = decltype(instance);
    launch_pdl(rope_kernel<true, typename I::KvT, I::kVec>, grid, kThreads, 0, stream, q, k,
               positions, inv_freq, inv_freq_row_stride, half, attention_scaling, heads_per_block,
               k_rows, v_rows, slot_mapping, arena, formats, layer);
  });
}

}  // namespace sieve::kernels::cuda
