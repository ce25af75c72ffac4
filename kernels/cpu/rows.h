#pragma once
// Row access for CPU ops: a "row" is the last dimension, which must be contiguous; leading
// dimensions may be strided (views into fused QKV buffers).

#include <cstdint>

#include "core/tensor.h"

namespace sieve::kernels::cpu {

inline int64_t num_rows(const TensorView& v) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < v.ndim(); ++d) rows *= v.size(d);
  return rows;
}

inline int64_t row_size(const TensorView& v) { return v.size(v.ndim() - 1); }

// Pointer to row `r` (row-major order over the leading dimensions).
template <typename T>
T* row_ptr(const TensorView& v, int64_t r) {
  int64_t offset = 0;
  for (int d = v.ndim() - 2; d >= 0; --d) {
    offset += (r % v.size(d)) * v.stride(d);
    r /= v.size(d);
  }
  return v.data<T>() + offset;
}

inline void check_rows(const TensorView& v) {
  SIEVE_CHECK(v.ndim() >= 1 && v.stride(v.ndim() - 1) == 1)
      << "last dimension must be contiguous: " << v.shape_string();
  SIEVE_CHECK(v.dtype() == DType::kF32) << "CPU ops take f32, got " << dtype_name(v.dtype());
}

}  // namespace sieve::kernels::cpu
