// The one place that asks whether CUDA was built (docs/design.md, "Backends").

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "spdlog/spdlog.h"

#if SIEVE_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace sieve::kernels {

StatusOr<std::unique_ptr<Backend>> make_backend(DevicePreference preference) {
  if (preference == DevicePreference::kCpu) return cpu::make_cpu_backend();
#if SIEVE_WITH_CUDA
  const int devices = cuda::device_count();
  if (devices > 0) {
    auto backend = cuda::make_cuda_backend(/*device=*/0);
    if (backend.ok() || preference == DevicePreference::kCuda) return backend;
    spdlog::warn("CUDA backend unavailable ({}); using the CPU backend",
                 std::string(backend.status().message()));
    return cpu::make_cpu_backend();
  }
  if (preference == DevicePreference::kCuda) {
    return FailedPreconditionError("--device cuda: this build has CUDA, but no CUDA device is "
                                   "visible");
  }
  spdlog::info("no CUDA device, using the CPU backend");
#else
  if (preference == DevicePreference::kCuda) {
    return FailedPreconditionError("--device cuda: this build has no CUDA backend");
  }
#endif
  return cpu::make_cpu_backend();
}

}  // namespace sieve::kernels
