// Random fill: a grid-stride loop, one splitmix64 hash per element, so a value depends only on
// (seed, index) and never on the launch shape.

#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/fill_random.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__host__ __device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fill_random_kernel(T* data, int64_t n, uint64_t key, float mean, float half_width) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const double u = static_cast<double>(splitmix64(key ^ static_cast<uint64_t>(i)) >> 11) *
                     0x1.0p-53;
    data[i] = from_float<T>(mean + half_width * static_cast<float>(2 * u - 1));
  }
}

}  // namespace

void launch_fill_random(void* data, DType dtype, int64_t n, uint64_t seed, float mean, float std,
                        cudaStream_t stream) {
  if (n == 0) return;
  const uint64_t key = splitmix64(seed);
  const float half_width = std * 1.7320508f;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65536);
  if (dtype == DType::kF32) {
    fill_random_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<float*>(data), n, key, mean, half_width);
  } else {
    fill_random_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<bf16*>(data), n, key, mean, half_width);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
