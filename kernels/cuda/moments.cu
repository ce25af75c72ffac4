// ExpectedAttention on the GPU. The moments: one block per (query head, i), one thread per j,
// each owning its entries of the sums (no atomics). The logits: one block per (query head,
// layer), one warp per slot; the warp rotates the key into shared memory and reads the moment
// matrix row by row (the same rows for every warp, so they stay in L1/L2). Straightforward
// rather than fast, like the other signals: they run only when a policy acts.

#include <cfloat>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_write.cuh"
#include "kernels/cuda/moments.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kWarps = 8;

template <typename QT>
__global__ void accumulate_moments_kernel(const QT* q, int64_t num_rows, int64_t row_stride,
                                          int head_dim, float* moments) {
  const int h = blockIdx.x, i = blockIdx.y, j = threadIdx.x;
  if (j >= head_dim) return;
  const int64_t width = static_cast<int64_t>(head_dim) * (head_dim + 1);
  const QT* base = q + static_cast<int64_t>(h) * head_dim;
  float outer = 0, sum = 0;
  for (int64_t t = 0; t < num_rows; ++t) {
    const QT* row = base + t * row_stride;
    const float qj = to_float(row[j]);
    outer += to_float(row[i]) * qj;
    if (i == 0) sum += qj;
  }
  float* m = moments + h * width;
  m[head_dim + static_cast<int64_t>(i) * head_dim + j] += outer;
  if (i == 0) m[j] += sum;
}

template <typename KvT>
__global__ void __launch_bounds__(kWarps * 32)
    expected_logits_kernel(KvArena a, ExpectedLogitPointers p) {
  __shared__ float mu_s[kMaxMomentHeadDim];
  __shared__ float kr_s[kWarps][kMaxMomentHeadDim];
  const int h = blockIdx.x, layer = blockIdx.y;
  const int d = a.head_dim;
  const int group = p.num_heads / a.num_kv_heads;
  const int kv_head = h / group;
  const int64_t list = static_cast<int64_t>(layer) * a.num_kv_heads + kv_head;
  int prefix_end = p.num_tokens, gap_end = p.num_tokens, count = p.num_tokens;
  if (p.head_lens) {
    prefix_end = p.head_lens[list];
    gap_end = p.gap_end;
    count = prefix_end + p.num_tokens - gap_end;
  }
  const int64_t width = static_cast<int64_t>(d) * (d + 1);
  const float* m = p.moments + (static_cast<int64_t>(layer) * p.num_heads + h) * width;
  const float* outer = m + d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) mu_s[i] = m[i] * p.inv_count;
  __syncthreads();
  const KvPageGeometry geometry = arena_geometry(a);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* kr = kr_s[warp];
  float* out = p.out + (static_cast<int64_t>(layer) * p.num_heads + h) * p.slot_stride;
  const int half = p.rotary_half;
  for (int v = warp; v < count; v += kWarps) {
    const int j = v < prefix_end ? v : gap_end + (v - prefix_end);
    const int64_t page = p.page_table[j / a.tokens_per_page];
    const auto k = arena_row<KvT>(a, geometry, layer, page, 0, kv_head, j % a.tokens_per_page);
    // k' = Rᵀ k, pair by pair; dimensions past the rotary ones stay.
    for (int i = lane; i < half; i += 32) {
      const float x = to_float(k[i]), y = to_float(k[i + half]);
      kr[i] = p.cos[i] * x + p.sin[i] * y;
      kr[i + half] = -p.sin[i] * x + p.cos[i] * y;
    }
    for (int i = 2 * half + lane; i < d; i += 32) kr[i] = to_float(k[i]);
    __syncwarp();
    float linear = 0, quadratic = 0;
    for (int i = lane; i < d; i += 32) {
      linear += mu_s[i] * kr[i];
      if (p.covariance) {
        const float* row = outer + static_cast<int64_t>(i) * d;
        float s = 0;
        for (int jj = 0; jj < d; ++jj) s += row[jj] * kr[jj];
        quadratic += kr[i] * s;
      }
    }
    linear = warp_sum(linear);
    quadratic = warp_sum(quadratic);
    if (lane == 0) {
      // k'ᵀ Σ k' = k'ᵀ E[q qᵀ] k' - (mu·k')².
      const float var = p.covariance ? quadratic * p.inv_count - linear * linear : 0.0f;
      out[v] = p.scale * linear + 0.5f * p.scale * p.scale * var;
    }
    __syncwarp();
  }
}

}  // namespace

void launch_accumulate_query_moments(const void* q, DType dtype, int64_t num_rows,
                                     int64_t row_stride, int num_heads, int head_dim,
                                     float* moments, cudaStream_t stream) {
  if (num_rows == 0) return;
  SIEVE_CHECK_LE(head_dim, kMaxMomentHeadDim);
  const dim3 grid(num_heads, head_dim);
  if (dtype == DType::kBF16) {
    accumulate_moments_kernel<<<grid, head_dim, 0, stream>>>(static_cast<const bf16*>(q), num_rows,
                                                             row_stride, head_dim, moments);
  } else {
    SIEVE_CHECK(dtype == DType::kF32) << "queries are " << dtype;
    accumulate_moments_kernel<<<grid, head_dim, 0, stream>>>(static_cast<const float*>(q), num_rows,
                                                             row_stride, head_dim, moments);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

void launch_expected_logits(const KvArena& arena, const ExpectedLogitPointers& p,
                            cudaStream_t stream) {
  SIEVE_CHECK_LE(arena.head_dim, kMaxMomentHeadDim);
  const dim3 grid(p.num_heads, arena.num_layers);
  if (arena.dtype == DType::kBF16) {
    expected_logits_kernel<bf16><<<grid, kWarps * 32, 0, stream>>>(arena, p);
  } else if (arena.dtype == DType::kU8) {  // quantized formats
    expected_logits_kernel<QuantRow><<<grid, kWarps * 32, 0, stream>>>(arena, p);
  } else {
    expected_logits_kernel<float><<<grid, kWarps * 32, 0, stream>>>(arena, p);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
