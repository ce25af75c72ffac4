#pragma once
// Kernel launches with programmatic dependent launch (PDL): the kernel may be scheduled while the
// one before it in the stream finishes, so its launch latency and its reads of weights overlap
// that kernel's tail (inside a CUDA graph the dependency becomes a programmatic edge). A decode
// step at batch 1 is some 400 kernels, most of them a few microseconds long, so those gaps are a
// tenth of the step. Only kernels that call wait_for_prior_kernels() (common.cuh) before touching
// memory an earlier kernel wrote may be launched this way. Included only by .cu files.

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device.h"

namespace sieve::kernels::cuda {

template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
                cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = pdl_enabled() ? 1 : 0;
  SIEVE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace sieve::kernels::cuda
