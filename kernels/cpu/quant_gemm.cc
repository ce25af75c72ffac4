#include "kernels/cpu/quant_gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/rows.h"
#include "models/gguf/quant.h"

namespace sieve::kernels::cpu {

// Each level's table, from quant_<level>.cc.
namespace qk_scalar {
const QuantKernels& kernels();
}
namespace qk_avx2 {
const QuantKernels& kernels();
}
namespace qk_avx512 {
const QuantKernels& kernels();
}
namespace qk_avx512vnni {
const QuantKernels& kernels();
}

namespace {

models::gguf::GgmlType ggml_type(DType dtype) {
  using models::gguf::GgmlType;
  switch (dtype) {
    case DType::kQ8_0:
      return GgmlType::kQ8_0;
    case DType::kQ4_0:
      return GgmlType::kQ4_0;
    case DType::kQ4_1:
      return GgmlType::kQ4_1;
    case DType::kQ4_K:
      return GgmlType::kQ4_K;
    case DType::kQ5_K:
      return GgmlType::kQ5_K;
    case DType::kQ6_K:
      return GgmlType::kQ6_K;
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
      break;
  }
  SIEVE_CHECK(false) << dtype_name(dtype) << " is not a block format";
  return GgmlType::kF32;
}

// Bytes from one row of a block-dtype matrix to the next.
size_t row_bytes(const TensorView& w) {
  SIEVE_CHECK_EQ(w.ndim(), 2);
  SIEVE_CHECK_EQ(w.stride(1), 1);
  return dtype_bytes(w.dtype(), w.stride(0));
}

// Up to this many rows of x, Q4_0 / Q4_1 weights are read without unpacking.
constexpr int64_t kDirectMaxRows = 4;

// From this many rows of x (prefill chunks, large batches) the weights are dequantized to f32 for
// one BLAS sgemm: there the product is compute-bound, and the int8 kernels here, with an f32
// scale per 16 elements, lose to OpenBLAS's f32 kernels (measured on the AMD EPYC dev machine:
// 256-token prefill 2.4x slower in CPU time). SIEVE_QUANT_BLAS_ROWS overrides it (0: never).
int64_t blas_min_rows() {
  static const int64_t rows = [] {
    const char* env = std::getenv("SIEVE_QUANT_BLAS_ROWS");
    return env != nullptr && *env != '\0' ? std::atoll(env) : int64_t{32};
  }();
  return rows;
}

// Scratch that lives with the thread: a GEMM allocates nothing once the sizes have been seen.
struct ActivationRows {
  std::vector<int8_t> q;
  std::vector<float> d, dsum;
};
// One weight row unpacked to u8 quants with a scale and offset per 16 (QuantKernels::unpack_row).
struct WeightRow {
  std::vector<uint8_t> q;
  std::vector<float> scale, offset;

  void unpack(const QuantKernels& kernels, DType dtype, const uint8_t* packed, int64_t k) {
    q.resize(static_cast<size_t>(k));
    scale.resize(static_cast<size_t>(k / 16));
    offset.resize(static_cast<size_t>(k / 16));
    kernels.unpack_row(dtype, packed, k, q.data(), scale.data(), offset.data());
  }
};

// y = x · dequantize(w)ᵀ (+ bias) through one cblas_sgemm (OpenMP inside), the weights
// dequantized into a scratch that lives with the calling thread.
void dequantized_gemm(const GemmArgs& a, const QuantKernels& kernels) {
  const TensorView& w = a.w;
  const int64_t m = a.x.size(0), n = w.size(0), k = w.size(1);
  static thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(n * k));
  float* f32 = scratch.data();
  const auto* base = static_cast<const uint8_t*>(w.raw());
  const size_t stride = row_bytes(w);
  const bool signed_weights = w.dtype() == DType::kQ8_0;
#pragma omp parallel
  {
    static thread_local WeightRow row;
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      row.unpack(kernels, w.dtype(), base + j * stride, k);
      kernels.to_f32(signed_weights, row.q.data(), row.scale.data(), row.offset.data(), k,
                     f32 + j * k);
    }
  }
  float beta = 0.0f;
  if (!a.bias.empty()) {
    for (int64_t i = 0; i < m; ++i) {
      std::memcpy(row_ptr<float>(a.y, i), a.bias.data<float>(), n * sizeof(float));
    }
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a.x.data<float>(), static_cast<int>(a.x.stride(0)), f32,
              static_cast<int>(k), beta, a.y.data<float>(), static_cast<int>(a.y.stride(0)));
}

// Q8_0 weights against unrounded x: each weight row to f32 once, then f32 dot products.
void q8_0_f32_gemm(const GemmArgs& a, const QuantKernels& kernels) {
  const TensorView& w = a.w;
  const int64_t m = a.x.size(0), n = w.size(0), k = w.size(1);
  const auto* base = static_cast<const uint8_t*>(w.raw());
  const size_t stride = row_bytes(w);
  const float* bias = a.bias.empty() ? nullptr : a.bias.data<float>();
#pragma omp parallel
  {
    static thread_local WeightRow row;
    static thread_local std::vector<float> f32;
    f32.resize(static_cast<size_t>(k));
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      row.unpack(kernels, w.dtype(), base + j * stride, k);
      kernels.to_f32(true, row.q.data(), row.scale.data(), row.offset.data(), k, f32.data());
      const float b = bias ? bias[j] : 0.0f;
      for (int64_t i = 0; i < m; ++i) {
        row_ptr<float>(a.y, i)[j] = b + kernels.dot_f32(f32.data(), row_ptr<float>(a.x, i), k);
      }
    }
  }
}

}  // namespace

const QuantKernels& quant_kernels(KernelLevel level) {
  switch (level) {
    case KernelLevel::kScalar:
      return qk_scalar::kernels();
    case KernelLevel::kAvx2:
      return qk_avx2::kernels();
    case KernelLevel::kAvx512:
      return qk_avx512::kernels();
    case KernelLevel::kAvx512Vnni:
      return qk_avx512vnni::kernels();
  }
  return qk_scalar::kernels();
}

void quant_gemm(const GemmArgs& a, KernelLevel level) {
  const TensorView& x = a.x;
  const TensorView& w = a.w;
  check_rows(x);
  check_rows(a.y);
  SIEVE_CHECK(is_block_dtype(w.dtype())) << dtype_name(w.dtype());
  SIEVE_CHECK(x.ndim() == 2 && w.ndim() == 2 && a.y.ndim() == 2);
  const int64_t m = x.size(0), n = w.size(0), k = x.size(1);
  SIEVE_CHECK_EQ(k, w.size(1));
  SIEVE_CHECK_EQ(a.y.size(0), m);
  SIEVE_CHECK_EQ(a.y.size(1), n);
  SIEVE_CHECK(k % dtype_block_elems(w.dtype()) == 0)
      << k << " columns of " << dtype_name(w.dtype());
  SIEVE_CHECK(a.bias.empty() || a.bias.numel() == n);
  if (m == 0 || n == 0) return;
  const QuantKernels& kernels = quant_kernels(level);
  if (blas_min_rows() > 0 && m >= blas_min_rows()) return dequantized_gemm(a, kernels);
  if (w.dtype() == DType::kQ8_0) return q8_0_f32_gemm(a, kernels);

  static thread_local ActivationRows act;
  act.q.resize(static_cast<size_t>(m * k));
  act.d.resize(static_cast<size_t>(m * k / 32));
  act.dsum.resize(static_cast<size_t>(m * k / 16));
  // Pointers, not `act`: inside a parallel region `act` would name each thread's own scratch.
  int8_t* xq = act.q.data();
  float* xd = act.d.data();
  float* xdsum = act.dsum.data();
#pragma omp parallel for schedule(static) if (m * k >= (1 << 15))
  for (int64_t i = 0; i < m; ++i) {
    kernels.quantize_row(row_ptr<float>(x, i), k, xq + i * k, xd + i * k / 32, xdsum + i * k / 16);
  }

  const auto* base = static_cast<const uint8_t*>(w.raw());
  const size_t stride = row_bytes(w);
  const float* bias = a.bias.empty() ? nullptr : a.bias.data<float>();
  const bool signed_weights = w.dtype() == DType::kQ8_0;
  // Few rows of x: the legacy formats' blocks are read as they are. More: each weight row is
  // unpacked once and meets every row of x.
  const bool direct =
      kernels.dot_blocks != nullptr && m <= kDirectMaxRows &&
      (w.dtype() == DType::kQ8_0 || w.dtype() == DType::kQ4_0 || w.dtype() == DType::kQ4_1);
  if (direct) {
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      const float b = bias ? bias[j] : 0.0f;
      for (int64_t i = 0; i < m; ++i) {
        row_ptr<float>(a.y, i)[j] = b + kernels.dot_blocks(w.dtype(), base + j * stride, xq + i * k,
                                                           xd + i * k / 32, xdsum + i * k / 16, k);
      }
    }
    return;
  }
#pragma omp parallel
  {
    static thread_local WeightRow row;
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      row.unpack(kernels, w.dtype(), base + j * stride, k);
      const float b = bias ? bias[j] : 0.0f;
      for (int64_t i = 0; i < m; i += 4) {
        const int rows = static_cast<int>(std::min<int64_t>(4, m - i));
        float out[4];
        kernels.dot(signed_weights, row.q.data(), row.scale.data(), row.offset.data(), xq + i * k,
                    xd + i * k / 32, xdsum + i * k / 16, k, rows, out);
        for (int r = 0; r < rows; ++r) row_ptr<float>(a.y, i + r)[j] = b + out[r];
      }
    }
  }
}

void dequantize_row(const TensorView& w, int64_t row, float* out) {
  SIEVE_CHECK(row >= 0 && row < w.size(0)) << "row " << row << " of " << w.shape_string();
  const auto* src = static_cast<const std::byte*>(w.raw()) + row * row_bytes(w);
  const Status status = models::gguf::dequantize(ggml_type(w.dtype()), src, w.size(1), out);
  SIEVE_CHECK(status.ok()) << status.message();
}

}  // namespace sieve::kernels::cpu
