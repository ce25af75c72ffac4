#pragma once
// Helpers of the CUDA parity tests: the shared CUDA backend, seeded random host tensors rounded to
// bf16 (the reference computes in f32 on exactly the values the GPU sees), uploads, NaN-poisoned
// device outputs, downloads, and the relative error ‖out − ref‖₂ / ‖ref‖₂ (NaN never passes).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace sieve::cuda_test {

// The process's CUDA backend, or null when no device is visible (tests then skip). Never
// destroyed: tearing it down during static destruction would race CUDA's own teardown at exit.
inline kernels::Backend* gpu() {
  static kernels::Backend* const backend = []() -> kernels::Backend* {
    if (kernels::cuda::device_count() == 0) return nullptr;
    auto made = kernels::cuda::make_cuda_backend(0);
    if (!made.ok()) {
      ADD_FAILURE() << made.status();
      return nullptr;
    }
    return made->release();
  }();
  return backend;
}

// The golden fixtures (tests/fixtures/golden): $SIEVE_GOLDEN_DIR, else fixtures/golden beside
// the binary (the bundle's layout), else the source tree's.
inline std::filesystem::path golden_dir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("SIEVE_GOLDEN_DIR")) return env;
  std::error_code error;
  const fs::path beside = fs::read_symlink("/proc/self/exe", error).parent_path() / "fixtures" /
                          "golden";
  if (!error && fs::exists(beside)) return beside;
  return fs::path(SIEVE_SOURCE_DIR) / "tests" / "fixtures" / "golden";
}

#define SIEVE_GPU_OR_SKIP()                                      \
  kernels::Backend* const gpu_backend = ::sieve::cuda_test::gpu(); \
  if (gpu_backend == nullptr) GTEST_SKIP() << "no CUDA device"

inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// A host f32 tensor of normal(0, scale) values rounded to bf16.
inline Tensor random_bf16_values(std::initializer_list<int64_t> shape, std::mt19937& rng,
                                 float scale = 1.0f) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = round_bf16(normal(rng));
  return t;
}

// A device tensor of `dtype` (kBF16 or kF32) holding the host f32 values.
inline Tensor upload(kernels::Backend& backend, const Tensor& host, DType dtype) {
  std::vector<int64_t> shape;
  for (int d = 0; d < host.ndim(); ++d) shape.push_back(host.size(d));
  Tensor staged = host;
  if (dtype == DType::kBF16) {
    staged = Tensor::empty(DType::kBF16, shape);
    for (int64_t i = 0; i < host.numel(); ++i) {
      staged.data<uint16_t>()[i] = f32_to_bf16(host.data<float>()[i]);
    }
  }
  auto device = backend.allocate(dtype, shape);
  SIEVE_CHECK(device.ok()) << device.status();
  backend.copy(*device, staged);
  return *device;
}

// A device i32 tensor of `values`.
inline Tensor upload_i32(kernels::Backend& backend, const std::vector<int32_t>& values) {
  auto device = backend.allocate(DType::kI32, {static_cast<int64_t>(values.size())});
  SIEVE_CHECK(device.ok()) << device.status();
  if (!values.empty()) {
    backend.copy(*device, TensorView(const_cast<int32_t*>(values.data()), DType::kI32,
                                     {static_cast<int64_t>(values.size())}));
  }
  return *device;
}

// A device tensor whose every element is NaN (bf16 or f32), so an unwritten output fails.
inline Tensor poisoned(kernels::Backend& backend, DType dtype, std::initializer_list<int64_t> shape) {
  auto device = backend.allocate(dtype, shape);
  SIEVE_CHECK(device.ok()) << device.status();
  Tensor host = Tensor::empty(dtype, shape);
  if (dtype == DType::kBF16) {
    for (int64_t i = 0; i < host.numel(); ++i) host.data<uint16_t>()[i] = 0x7fc0;
  } else {
    for (int64_t i = 0; i < host.numel(); ++i) host.data<float>()[i] = NAN;
  }
  backend.copy(*device, host);
  return *device;
}

// The device tensor's values as a host f32 tensor (bf16 widened exactly).
inline Tensor download(kernels::Backend& backend, const Tensor& device) {
  std::vector<int64_t> shape;
  for (int d = 0; d < device.ndim(); ++d) shape.push_back(device.size(d));
  Tensor host = Tensor::empty(device.dtype(), shape);
  backend.copy(host, device);
  if (device.dtype() != DType::kBF16) return host;
  Tensor wide = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < host.numel(); ++i) {
    wide.data<float>()[i] = bf16_to_f32(host.data<uint16_t>()[i]);
  }
  return wide;
}

// ‖got − want‖₂ / ‖want‖₂ over n values; infinity if any value of `got` is not finite.
inline double relative_error(const float* got, const float* want, int64_t n) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

inline double relative_error(const Tensor& got, const Tensor& want) {
  SIEVE_CHECK_EQ(got.numel(), want.numel());
  return relative_error(got.data<float>(), want.data<float>(), got.numel());
}

// bf16 operands, f32 accumulation, bf16 output: METHOD.md's 1e-3..1e-2 band.
constexpr double kBf16Tolerance = 1e-2;

}  // namespace sieve::cuda_test
