#pragma once
// GEMMs through cuBLASLt (plain C++ header: the handles stay in gemm.cu).

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "core/dtype.h"
#include "core/status.h"

namespace sieve::kernels::cuda {

// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]): row-major operands with leading dimensions (row
// strides, in elements); x, w and bias bf16, y bf16 or f32; f32 accumulation.
struct GemmProblem {
  const void* x = nullptr;
  int64_t ldx = 0;
  const void* w = nullptr;
  int64_t ldw = 0;
  const void* bias = nullptr;  // optional
  void* y = nullptr;
  int64_t ldy = 0;
  DType y_dtype = DType::kBF16;
  int64_t m = 0, n = 0, k = 0;
};

// Owns the cuBLASLt and cuBLAS handles, a workspace, and the algorithms chosen per problem
// shape. The bias is fused as cuBLASLt's BIAS epilogue for bf16 outputs, and added by a small
// kernel otherwise; shapes cuBLASLt declines (odd alignments) run through cublasGemmEx.
class CublasGemm {
 public:
  static StatusOr<std::unique_ptr<CublasGemm>> create(cudaStream_t stream);
  ~CublasGemm();
  CublasGemm(const CublasGemm&) = delete;
  CublasGemm& operator=(const CublasGemm&) = delete;

  void run(const GemmProblem& problem);

 private:
  struct Impl;
  explicit CublasGemm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sieve::kernels::cuda
