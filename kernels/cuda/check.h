#pragma once
// Checks of CUDA runtime and cuBLAS calls (docs/design.md, "Errors"): a failed call is a broken
// invariant (sticky errors poison the context), so it prints the call's text, the error string,
// file and line, then aborts. Start-up paths that must return a Status test the result themselves.
//
//   SIEVE_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream));
//   kernel<<<grid, block, 0, stream>>>(...);
//   SIEVE_CUDA_CHECK_LAUNCH();

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace sieve::kernels::cuda::internal {

[[noreturn]] inline void cuda_failure(const char* call, cudaError_t error, const char* file,
                                      int line) {
  int device = -1;
  cudaGetDevice(&device);
  std::fprintf(stderr, "%s:%d: CUDA call failed on device %d: %s: %s (%s)\n", file, line, device,
               call, cudaGetErrorName(error), cudaGetErrorString(error));
  std::fflush(stderr);
  std::abort();
}

[[noreturn]] inline void cublas_failure(const char* call, cublasStatus_t status, const char* file,
                                        int line) {
  std::fprintf(stderr, "%s:%d: cuBLAS call failed: %s: %s (%d)\n", file, line, call,
               cublasGetStatusString(status), static_cast<int>(status));
  std::fflush(stderr);
  std::abort();
}

}  // namespace sieve::kernels::cuda::internal

#define SIEVE_CUDA_CHECK(call)                                                       \
  do {                                                                               \
    const cudaError_t sieve_cuda_error_ = (call);                                    \
    if (sieve_cuda_error_ != cudaSuccess) {                                          \
      ::sieve::kernels::cuda::internal::cuda_failure(#call, sieve_cuda_error_, __FILE__, \
                                                     __LINE__);                      \
    }                                                                                \
  } while (false)

#define SIEVE_CUBLAS_CHECK(call)                                                         \
  do {                                                                                   \
    const cublasStatus_t sieve_cublas_status_ = (call);                                  \
    if (sieve_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                 \
      ::sieve::kernels::cuda::internal::cublas_failure(#call, sieve_cublas_status_, __FILE__, \
                                                       __LINE__);                        \
    }                                                                                    \
  } while (false)

// After every kernel launch: the launch's own error (bad configuration, no kernel image), without
// synchronizing, so it is legal while a stream is being captured into a graph.
#define SIEVE_CUDA_CHECK_LAUNCH() SIEVE_CUDA_CHECK(cudaGetLastError())
