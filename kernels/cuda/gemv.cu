// GEMV for decode steps of a few sequences. A decode step at batch 1 reads every weight once, so
// its GEMMs are bound by memory bandwidth; cuBLASLt's kernels for these shapes reach 50–93% of it
// (its split-K ones add a reduce kernel), so the small-M case has its own kernel.
//
// Shape, chosen by measurement (bench/gpu/gemv_explore.cu on the H100, Llama-3.1-8B's shapes): a
// block of 512 threads owns two rows of w; each thread loads one 16-byte vector of each row per
// round (k = 4096 is one round), bypassing L1 (every weight byte is read once), and multiplies it
// into all kM rows of x (read through L1: every block reads the same x); warp shuffles and shared
// memory reduce the block's partial sums. With all of a block's loads in flight at once this
// streams 2.5–3.2 TB/s, the read-only copy rate of the same bytes (a warp per four rows, the
// previous kernel, reached 2.0–2.9).
//
// With programmatic dependent launch the first round's weight loads are issued before waiting for
// the kernel that produces x, so they overlap that kernel's tail.

#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/launch.cuh"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kRows = 2;  // rows of w per block

// A 16-byte load that does not allocate in L1: weights are streamed once.
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <int kM, typename OutT>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const bf16* __restrict__ x, int64_t ldx, const bf16* __restrict__ w, int64_t ldw,
                const bf16* __restrict__ bias, OutT* __restrict__ y, int64_t ldy, int n, int k) {
  constexpr int kWarps = kThreads / 32;
  __shared__ float partial[kWarps][kRows * kM];
  const int row0 = blockIdx.x * kRows;
  // A row past n reads the last row again (no branch in the loop); its sum is dropped.
  const uint4* w_rows[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    w_rows[r] =
        reinterpret_cast<const uint4*>(w + static_cast<int64_t>(min(row0 + r, n - 1)) * ldw);
  }
  float acc[kRows][kM] = {};
  const int vecs = k / 8;
  for (int base = 0; base < vecs; base += kThreads) {
    const int v = base + static_cast<int>(threadIdx.x);
    const bool in_range = v < vecs;
    uint4 wv[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      wv[r] = in_range ? load_streaming(w_rows[r] + v) : make_uint4(0, 0, 0, 0);
    }
    if (base == 0) wait_for_prior_kernels();  // x comes from the kernel before this one
    if (!in_range) continue;
    float xf[kM][8];
#pragma unroll
    for (int m = 0; m < kM; ++m) load16(x + m * ldx + v * 8, xf[m]);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const bf16* wr = reinterpret_cast<const bf16*>(&wv[r]);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float wf = __bfloat162float(wr[j]);
#pragma unroll
        for (int m = 0; m < kM; ++m) acc[r][m] = fmaf(wf, xf[m][j], acc[r][m]);
      }
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      const float sum = warp_sum(acc[r][m]);
      if (lane == 0) partial[warp][r * kM + m] = sum;
    }
  }
  __syncthreads();
  if (threadIdx.x < kRows * kM) {
    const int r = threadIdx.x / kM, m = threadIdx.x % kM;
    if (row0 + r < n) {
      float sum = bias ? to_float(bias[row0 + r]) : 0.0f;
#pragma unroll
      for (int i = 0; i < kWarps; ++i) sum += partial[i][threadIdx.x];
      y[m * ldy + row0 + r] = from_float<OutT>(sum);
    }
  }
}

template <int kM>
void launch_rows(const GemmProblem& p, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((p.n + kRows - 1) / kRows);
  const auto* x = static_cast<const bf16*>(p.x);
  const auto* w = static_cast<const bf16*>(p.w);
  const auto* bias = static_cast<const bf16*>(p.bias);
  const int n = static_cast<int>(p.n), k = static_cast<int>(p.k);
  if (p.y_dtype == DType::kF32) {
    launch_pdl(gemv_kernel<kM, float>, blocks, kThreads, 0, stream, x, p.ldx, w, p.ldw, bias,
               static_cast<float*>(p.y), p.ldy, n, k);
  } else {
    launch_pdl(gemv_kernel<kM, bf16>, blocks, kThreads, 0, stream, x, p.ldx, w, p.ldw, bias,
               static_cast<bf16*>(p.y), p.ldy, n, k);
  }
}

}  // namespace

bool launch_gemv(const GemmProblem& p, cudaStream_t stream) {
  static_assert(kGemvMaxRows == 4);
  const bool suits = p.k > 0 && p.m >= 1 && p.m <= kGemvMaxRows && p.k % 8 == 0 && p.ldx % 8 == 0 &&
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
