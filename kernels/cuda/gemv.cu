// GEMV for decode steps of a few sequences. A decode step at batch 1 reads every weight once, so
// its GEMMs are bound by memory bandwidth; cuBLASLt's kernels for these shapes reach 50–93% of it
// (its split-K ones add a reduce kernel), so the small-M case has its own kernel: each warp owns
// kRowsPerWarp rows of w and streams them in 16-byte vectors, every lane a strided slice of k,
// multiplying each vector into all kM rows of x (read through L1: every warp reads the same x),
// with f32 accumulation and a shuffle reduction at the end.

#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemv.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;

template <int kM, typename OutT>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const bf16* __restrict__ x, int64_t ldx, const bf16* __restrict__ w, int64_t ldw,
                const bf16* __restrict__ bias, OutT* __restrict__ y, int64_t ldy, int n, int k) {
  const int warp = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int row0 = warp * kRowsPerWarp;
  if (row0 >= n) return;
  const int rows = min(kRowsPerWarp, n - row0);
  // Rows past n read the last row again (no branch in the loop); their sums are dropped.
  const bf16* w_rows[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) w_rows[r] = w + min(row0 + r, n - 1) * ldw;
  float acc[kRowsPerWarp][kM];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[r][m] = 0.0f;
  }
  const int vecs = k / 8;
#pragma unroll 4
  for (int v = lane; v < vecs; v += 32) {
    uint4 wv[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {  // the loads first, so they are all in flight
      wv[r] = __ldg(reinterpret_cast<const uint4*>(w_rows[r] + v * 8));
    }
    float xf[kM][8];
#pragma unroll
    for (int m = 0; m < kM; ++m) load16(x + m * ldx + v * 8, xf[m]);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const bf16* wr = reinterpret_cast<const bf16*>(&wv[r]);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float wf = __bfloat162float(wr[j]);
#pragma unroll
        for (int m = 0; m < kM; ++m) acc[r][m] = fmaf(wf, xf[m][j], acc[r][m]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[r][m] = warp_sum(acc[r][m]);
  }
  if (lane == 0) {
    for (int r = 0; r < rows; ++r) {
      const float b = bias ? to_float(bias[row0 + r]) : 0.0f;
#pragma unroll
      for (int m = 0; m < kM; ++m) y[m * ldy + row0 + r] = from_float<OutT>(acc[r][m] + b);
    }
  }
}

template <int kM>
void launch_rows(const GemmProblem& p, cudaStream_t stream) {
  const int64_t warps = (p.n + kRowsPerWarp - 1) / kRowsPerWarp;
  const unsigned blocks = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
  const auto* x = static_cast<const bf16*>(p.x);
  const auto* w = static_cast<const bf16*>(p.w);
  const auto* bias = static_cast<const bf16*>(p.bias);
  const int n = static_cast<int>(p.n), k = static_cast<int>(p.k);
  if (p.y_dtype == DType::kF32) {
    gemv_kernel<kM, float><<<blocks, kWarps * 32, 0, stream>>>(x, p.ldx, w, p.ldw, bias,
                                                               static_cast<float*>(p.y), p.ldy, n, k);
  } else {
    gemv_kernel<kM, bf16><<<blocks, kWarps * 32, 0, stream>>>(x, p.ldx, w, p.ldw, bias,
                                                              static_cast<bf16*>(p.y), p.ldy, n, k);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool launch_gemv(const GemmProblem& p, cudaStream_t stream) {
  static_assert(kGemvMaxRows == 4);
  const bool suits = p.m >= 1 && p.m <= kGemvMaxRows && p.k % 8 == 0 && p.ldx % 8 == 0 &&
                     p.ldw % 8 == 0 && aligned16(p.x) && aligned16(p.w) && p.n <= INT32_MAX &&
                     p.k <= INT32_MAX;
  if (!suits) return false;
  switch (p.m) {
    case 1: launch_rows<1>(p, stream); break;
    case 2: launch_rows<2>(p, stream); break;
    case 3: launch_rows<3>(p, stream); break;
    default: launch_rows<4>(p, stream); break;
  }
  return true;
}

}  // namespace sieve::kernels::cuda
