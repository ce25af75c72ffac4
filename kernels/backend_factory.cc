// The one place that asks whether CUDA was built (docs/design.md, "Backends").

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_features.h"
#include "spdlog/spdlog.h"

#if SIEVE_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace sieve::kernels {
namespace {

// The CPU backend, once SIEVE_CPU_KERNELS (if set) names a level this CPU runs; the log says
// which kernels and how many threads it uses.
StatusOr<std::unique_ptr<Backend>> cpu_backend() {
  RETURN_IF_ERROR(cpu::selected_kernel_level().status());
  spdlog::info("{}", cpu::describe_cpu_kernels());
  return cpu::make_cpu_backend();
}

}  // namespace

StatusOr<std::unique_ptr<Backend>> make_backend(DevicePreference preference) {
  if (preference == DevicePreference::kCpu) return cpu_backend();
#if SIEVE_WITH_CUDA
  const int devices = cuda::device_count();
  if (devices > 0) {
    auto backend = cuda::make_cuda_backend(/*device=*/0);
    if (backend.ok() || preference == DevicePreference::kCuda) return backend;
    spdlog::warn("CUDA backend unavailable ({}); using the CPU backend",
                 std::string(backend.status().message()));
    return cpu_backend();
  }
  if (preference == DevicePreference::kCuda) {
    return FailedPreconditionError(
        "--device cuda: this build has CUDA, but no CUDA device is "
        "visible");
  }
  spdlog::info("no CUDA device, using the CPU backend");
#else
  if (preference == DevicePreference::kCuda) {
    return FailedPreconditionError("--device cuda: this build has no CUDA backend");
  }
#endif
  return cpu_backend();
}

}  // namespace sieve::kernels
