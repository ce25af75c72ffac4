// SwiGLU: one block per row, 16-byte vectors where the rows allow them.

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/silu_mul.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

template <int kVec>
__global__ void __launch_bounds__(kThreads) silu_mul_kernel(StridedRows out, StridedRows gate_up) {
  const int64_t row = blockIdx.x;
  const int64_t f = out.row_size;
  const bf16* g = static_cast<const bf16*>(gate_up.data) + gate_up.row_offset(row);
  const bf16* u = g + f;
  bf16* o = static_cast<bf16*>(out.data) + out.row_offset(row);
  for (int64_t i = static_cast<int64_t>(threadIdx.x) * kVec; i < f; i += kThreads * kVec) {
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
  if (vec) {
    silu_mul_kernel<8><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(out, gate_up);
  } else {
    silu_mul_kernel<1><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(out, gate_up);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
