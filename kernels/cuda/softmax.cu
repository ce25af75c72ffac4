// Row softmax: one block per row, three passes (max, sum of exponentials, scale), the row reread
// from cache each time.

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/softmax.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_kernel(StridedRows x) {
  __shared__ float scratch[32];
  T* row = static_cast<T*>(x.data) + x.row_offset(blockIdx.x);
  const int64_t n = x.row_size;
  float max = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) max = fmaxf(max, to_float(row[i]));
  max = block_max(max, scratch);
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += expf(to_float(row[i]) - max);
  const float inv = 1.0f / block_sum(sum, scratch);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    row[i] = from_float<T>(expf(to_float(row[i]) - max) * inv);
  }
}

}  // namespace

void launch_softmax(const StridedRows& x, DType dtype, cudaStream_t stream) {
  const int64_t rows = x.num_rows();
  if (rows == 0) return;
  if (dtype == DType::kF32) {
    softmax_kernel<float><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x);
  } else {
    softmax_kernel<bf16><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
