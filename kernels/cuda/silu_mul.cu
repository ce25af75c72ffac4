// SwiGLU: blocks along the rows (grid.x) and along each row (grid.y, so a decode step of a few
// rows still spreads over the GPU), 16-byte vectors where the rows allow them.

#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/silu_mul.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

template <int kVec>
__global__ void __launch_bounds__(kThreads) silu_mul_kernel(StridedRows out, StridedRows gate_up) {
  wait_for_prior_kernels();
  allow_next_kernel();
  const int64_t row = blockIdx.x;
  const int64_t f = out.row_size;
  const bf16* g = static_cast<const bf16*>(gate_up.data) + gate_up.row_offset(row);
  const bf16* u = g + f;
  bf16* o = static_cast<bf16*>(out.data) + out.row_offset(row);
  const int64_t stride = static_cast<int64_t>(gridDim.y) * kThreads * kVec;
  for (int64_t i = (static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x) * kVec; i < f;
       i += stride) {
    if constexpr (kVec == 8) {
      float gv[8], uv[8];
      load16(g + i, gv);
      load16(u + i, uv);
#pragma unroll
      for (int j = 0; j < 8; ++j) gv[j] = silu_times(gv[j], uv[j]);
      store16(o + i, gv);
    } else {
      o[i] = __float2bfloat16_rn(silu_times(__bfloat162float(g[i]), __bfloat162float(u[i])));
    }
  }
}

}  // namespace

void launch_silu_mul(const StridedRows& out, const StridedRows& gate_up, cudaStream_t stream) {
  const int64_t rows = out.num_rows();
  if (rows == 0) return;
  // The up half starts f elements into the row: it must be 16-byte aligned too.
  const bool vec = out.vectorizable(2) && gate_up.vectorizable(2) && out.row_size % 8 == 0;
  const int kVec = vec ? 8 : 1;
  // About 256 blocks in all, each at least one pass of its threads.
  const int64_t per_row = (out.row_size + kThreads * kVec - 1) / (kThreads * kVec);
  const int64_t split = std::clamp<int64_t>(256 / rows, 1, per_row);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(split));
  if (vec) {
    launch_pdl(silu_mul_kernel<8>, grid, kThreads, 0, stream, out, gate_up);
  } else {
    launch_pdl(silu_mul_kernel<1>, grid, kThreads, 0, stream, out, gate_up);
  }
}

}  // namespace sieve::kernels::cuda
