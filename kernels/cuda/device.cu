// Device discovery, safe without a driver: the factory asks this before anything else.

#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"

namespace sieve::kernels::cuda {
namespace {

// Built like every kernel of the backend: if it has no image for the GPU, none of them has.
__global__ void probe_kernel() {}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the "no driver" error
    return 0;
  }
  return count;
}

std::string kernel_image_error() {
  cudaFuncAttributes attributes{};
  const cudaError_t error = cudaFuncGetAttributes(&attributes, probe_kernel);
  if (error == cudaSuccess) return "";
  cudaGetLastError();
  return cudaGetErrorString(error);
}

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SIEVE_PDL");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return enabled;
}

}  // namespace sieve::kernels::cuda
