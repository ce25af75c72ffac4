// RMSNorm and the fused residual add + RMSNorm: one warp per row for short rows (per-head q/k
// norms), one 256-thread block per row for hidden-size rows. Hidden-size rows of up to 8192
// elements stay in registers (rms_norm_row_kernel); other rows take two passes, the first summing
// squares (and writing the residual), the second rereading the row from cache and scaling it.

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/rms_norm.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Reads kVec elements of a row as floats (kVec = 8: one 16-byte vector; 1: scalar).
template <int kVec>
__device__ __forceinline__ void load_row(const bf16* p, float* v) {
  if constexpr (kVec == 8) {
    load16(p, v);
  } else {
    v[0] = to_float(*p);
  }
}

template <int kVec>
__device__ __forceinline__ void store_row(bf16* p, const float* v) {
  if constexpr (kVec == 8) {
    store16(p, v);
  } else {
    *p = from_float<bf16>(v[0]);
  }
}

// kRowThreads threads normalize one row (32: a warp; kThreads: the whole block). With kAdd the
// residual is updated first and the normalized value is that of the stored (bf16) residual.
template <int kVec, int kRowThreads, bool kAdd>
__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(StridedRows out, StridedRows residual, StridedRows x, const bf16* weight,
                    float eps) {
  __shared__ float scratch[32];
  wait_for_prior_kernels();
  allow_next_kernel();
  constexpr int kRowsPerBlock = kThreads / kRowThreads;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kRowThreads;
  const int t = threadIdx.x % kRowThreads;
  const int64_t n = x.row_size;
  const bool active = row < x.num_rows();
  const bf16* in = nullptr;
  bf16* res = nullptr;
  bf16* dst = nullptr;
  if (active) {
    in = static_cast<const bf16*>(x.data) + x.row_offset(row);
    dst = static_cast<bf16*>(out.data) + out.row_offset(row);
    if constexpr (kAdd) res = static_cast<bf16*>(residual.data) + residual.row_offset(row);
  }
  float sum = 0.0f;
  if (active) {
    for (int64_t i = static_cast<int64_t>(t) * kVec; i < n; i += kRowThreads * kVec) {
      float v[kVec];
      load_row<kVec>(in + i, v);
      if constexpr (kAdd) {
        float r[kVec];
        load_row<kVec>(res + i, r);
#pragma unroll
        for (int j = 0; j < kVec; ++j) r[j] = __bfloat162float(__float2bfloat16_rn(r[j] + v[j]));
        store_row<kVec>(res + i, r);
#pragma unroll
        for (int j = 0; j < kVec; ++j) v[j] = r[j];
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) sum += v[j] * v[j];
    }
  }
  if constexpr (kRowThreads == 32) {
    sum = warp_sum(sum);
  } else {
    sum = block_sum(sum, scratch);
  }
  if (!active) return;
  const float inv = rsqrtf(sum / static_cast<float>(n) + eps);
  const bf16* src = kAdd ? res : in;
  for (int64_t i = static_cast<int64_t>(t) * kVec; i < n; i += kRowThreads * kVec) {
    float v[kVec], w[kVec];
    load_row<kVec>(src + i, v);
    load_row<kVec>(weight + i, w);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = w[j] * (v[j] * inv);
    store_row<kVec>(dst + i, v);
  }
}

// Hidden-size rows of up to kThreads · 8 · kChunks elements (the models served): one block per
// row holds the row in registers, so x (and the residual) are read once, and loads the weights
// before waiting for the kernel that wrote x (they are constant), so at batch 1 the norm costs
// little more than one round trip to memory.
constexpr int kChunks = 4;

template <bool kAdd>
__global__ void __launch_bounds__(kThreads)
    rms_norm_row_kernel(StridedRows out, StridedRows residual, StridedRows x, const bf16* weight,
                        float eps) {
  __shared__ float scratch[32];
  const int64_t n = x.row_size;
  float w[kChunks][8] = {}, v[kChunks][8] = {};
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t i = (c * kThreads + static_cast<int64_t>(threadIdx.x)) * 8;
    if (i < n) load16(weight + i, w[c]);
  }
  wait_for_prior_kernels();
  allow_next_kernel();
  const int64_t row = blockIdx.x;
  const bf16* in = static_cast<const bf16*>(x.data) + x.row_offset(row);
  bf16* dst = static_cast<bf16*>(out.data) + out.row_offset(row);
  bf16* res = kAdd ? static_cast<bf16*>(residual.data) + residual.row_offset(row) : nullptr;
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t i = (c * kThreads + static_cast<int64_t>(threadIdx.x)) * 8;
    if (i >= n) continue;
    load16(in + i, v[c]);
    if constexpr (kAdd) {
      float r[8];
      load16(res + i, r);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[c][j] = __bfloat162float(__float2bfloat16_rn(r[j] + v[c][j]));
      store16(res + i, v[c]);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) sum += v[c][j] * v[c][j];
  }
  sum = block_sum(sum, scratch);
  const float inv = rsqrtf(sum / static_cast<float>(n) + eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t i = (c * kThreads + static_cast<int64_t>(threadIdx.x)) * 8;
    if (i >= n) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) v[c][j] = w[c][j] * (v[c][j] * inv);
    store16(dst + i, v[c]);
  }
}

template <bool kAdd>
void launch(const StridedRows& out, const StridedRows& residual, const StridedRows& x,
            const void* weight, float eps, cudaStream_t stream) {
  const int64_t rows = x.num_rows();
  if (rows == 0) return;
  const bool vec = out.vectorizable(2) && x.vectorizable(2) && aligned16(weight) &&
                   (!kAdd || residual.vectorizable(2));
  const bool short_rows = x.row_size <= 1024;
  const int64_t rows_per_block = short_rows ? kThreads / 32 : 1;
  const dim3 grid(static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block));
  const auto* w = static_cast<const bf16*>(weight);
  if (vec && !short_rows && x.row_size <= kThreads * 8 * kChunks) {
    launch_pdl(rms_norm_row_kernel<kAdd>, grid, kThreads, 0, stream, out, residual, x, w, eps);
  } else if (vec && short_rows) {
    launch_pdl(rms_norm_kernel<8, 32, kAdd>, grid, kThreads, 0, stream, out, residual, x, w, eps);
  } else if (vec) {
    launch_pdl(rms_norm_kernel<8, kThreads, kAdd>, grid, kThreads, 0, stream, out, residual, x, w,
               eps);
  } else if (short_rows) {
    launch_pdl(rms_norm_kernel<1, 32, kAdd>, grid, kThreads, 0, stream, out, residual, x, w, eps);
  } else {
    launch_pdl(rms_norm_kernel<1, kThreads, kAdd>, grid, kThreads, 0, stream, out, residual, x, w,
               eps);
  }
}

}  // namespace

void launch_rms_norm(const StridedRows& out, const StridedRows& x, const void* weight, float eps,
                     cudaStream_t stream) {
  launch<false>(out, StridedRows{}, x, weight, eps, stream);
}

void launch_add_rms_norm(const StridedRows& out, const StridedRows& residual, const StridedRows& x,
                         const void* weight, float eps, cudaStream_t stream) {
  launch<true>(out, residual, x, weight, eps, stream);
}

}  // namespace sieve::kernels::cuda
