#pragma once
// StridedRows: how the row kernels see a TensorView. A "row" is the last dimension, which is
// contiguous; up to three leading dimensions may be strided (q/k/v views into a fused QKV buffer
// are [tokens, heads, head_dim] with a token stride of the whole QKV row). Plain C++: launchers
// take it by value and kernels decode a row index with row_offset().

#include <cstdint>

#if defined(__CUDACC__)
#define SIEVE_HOST_DEVICE __host__ __device__
#else
#define SIEVE_HOST_DEVICE
#endif

namespace sieve::kernels::cuda {

struct StridedRows {
  void* data = nullptr;
  int64_t row_size = 0;        // elements of one row
  int num_lead = 0;            // leading dimensions (0..3); 0 = a single row
  int64_t sizes[3] = {1, 1, 1};
  int64_t strides[3] = {0, 0, 0};  // in elements

  SIEVE_HOST_DEVICE int64_t num_rows() const {
    return (num_lead > 0 ? sizes[0] : 1) * (num_lead > 1 ? sizes[1] : 1) *
           (num_lead > 2 ? sizes[2] : 1);
  }

  // Element offset of row `r` in row-major order over the leading dimensions.
  SIEVE_HOST_DEVICE int64_t row_offset(int64_t r) const {
    // Unrolled by hand: constant indices keep the struct out of local memory in kernels.
    int64_t offset = 0;
    if (num_lead > 2) {
      offset += (r % sizes[2]) * strides[2];
      r /= sizes[2];
    }
    if (num_lead > 1) {
      offset += (r % sizes[1]) * strides[1];
      r /= sizes[1];
    }
    if (num_lead > 0) offset += (r % sizes[0]) * strides[0];
    return offset;
  }

  // True when every row start is 16-byte aligned and a row is whole 16-byte vectors.
  bool vectorizable(int64_t elem_bytes) const {
    if (reinterpret_cast<uintptr_t>(data) % 16 != 0 || (row_size * elem_bytes) % 16 != 0) {
      return false;
    }
    for (int d = 0; d < num_lead; ++d) {
      if (sizes[d] > 1 && (strides[d] * elem_bytes) % 16 != 0) return false;
    }
    return true;
  }
};

}  // namespace sieve::kernels::cuda
