// cuBLASLt GEMMs. Row-major y = x·wᵀ is column-major yᵀ = w·xᵀ: cuBLASLt's A is w (k×n,
// transposed), B is x (k×m), D is y (n×m); a row-major leading dimension is the column-major one
// unchanged. Descriptors and the heuristic's algorithm are cached per (shape, leading dims,
// alignment, output dtype, epilogue), so a decode step asks the heuristic nothing.

#include <cstring>
#include <functional>
#include <unordered_map>

#include "core/check.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"

namespace sieve::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLAS's recommendation for Hopper

// y[i, j] += bias[j]: the bias of GEMMs whose epilogue cannot take it.
template <typename T>
__global__ void add_bias_kernel(T* y, int64_t ldy, const bf16* bias, int64_t m, int64_t n) {
  const int64_t i = blockIdx.y;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T* out = y + i * ldy + j;
    *out = from_float<T>(to_float(*out) + to_float(bias[j]));
  }
  (void)m;
}

void launch_add_bias(const GemmProblem& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((p.n + 255) / 256, 64)),
                  static_cast<unsigned>(p.m));
  if (p.y_dtype == DType::kF32) {
    add_bias_kernel<<<grid, 256, 0, stream>>>(static_cast<float*>(p.y), p.ldy,
                                              static_cast<const bf16*>(p.bias), p.m, p.n);
  } else {
    add_bias_kernel<<<grid, 256, 0, stream>>>(static_cast<bf16*>(p.y), p.ldy,
                                              static_cast<const bf16*>(p.bias), p.m, p.n);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

// Largest power of two (at most 16) dividing the address.
int alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int bytes = 16;
  while (bytes > 1 && a % bytes != 0) bytes /= 2;
  return bytes;
}

struct Key {
  int64_t m, n, k, ldx, ldw, ldy;
  int y_dtype, fused_bias, align_x, align_w, align_y, align_bias;
  bool operator==(const Key& o) const { return std::memcmp(this, &o, sizeof(Key)) == 0; }
};

struct KeyHash {
  size_t operator()(const Key& key) const {
    const auto* bytes = reinterpret_cast<const unsigned char*>(&key);
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(Key); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
    return h;
  }
};

// One cached problem: its descriptors and algorithm (or none: use the fallback).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;
};

}  // namespace

struct CublasGemm::Impl {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void* workspace = nullptr;
  std::unordered_map<Key, Plan, KeyHash> plans;

  ~Impl() {
    for (auto& [key, plan] : plans) {
      if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
      if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
      if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
      if (plan.d) cublasLtMatrixLayoutDestroy(plan.d);
    }
    if (blas) cublasDestroy(blas);
    if (lt) cublasLtDestroy(lt);
    if (workspace) cudaFree(workspace);
  }

  Plan& plan_for(const GemmProblem& p, const Key& key) {
    auto [it, inserted] = plans.try_emplace(key);
    Plan& plan = it->second;
    if (!inserted) return plan;
    const cudaDataType_t y_type = p.y_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
    SIEVE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    SIEVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                      &trans_a, sizeof(trans_a)));
    SIEVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                      &trans_b, sizeof(trans_b)));
    if (key.fused_bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      SIEVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
      const cudaDataType_t bias_type = CUDA_R_16BF;
      SIEVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    }
    SIEVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF, p.k, p.n, p.ldw));
    SIEVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, p.k, p.m, p.ldx));
    SIEVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.d, y_type, p.n, p.m, p.ldy));

    cublasLtMatmulPreference_t preference = nullptr;
    SIEVE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    const size_t workspace_bytes = kWorkspaceBytes;
    SIEVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
        sizeof(workspace_bytes)));
    const uint32_t align_a = key.align_w, align_b = key.align_x, align_d = key.align_y;
    SIEVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
    SIEVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
    SIEVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
    SIEVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        lt, plan.desc, plan.a, plan.b, plan.d, plan.d, preference, 1, &result, &found);
    SIEVE_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
    // NOT_SUPPORTED (no algorithm for this layout) selects the fallback; anything else is a bug.
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) SIEVE_CUBLAS_CHECK(status);
    if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
      plan.algo = result.algo;
      plan.has_algo = true;
    }
    return plan;
  }

  // cublasGemmEx handles every leading dimension and alignment; the bias is added afterwards.
  void fallback(const GemmProblem& p) {
    const float alpha = 1.0f, beta = 0.0f;
    SIEVE_CUBLAS_CHECK(cublasGemmEx(
        blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(p.n), static_cast<int>(p.m),
        static_cast<int>(p.k), &alpha, p.w, CUDA_R_16BF, static_cast<int>(p.ldw), p.x, CUDA_R_16BF,
        static_cast<int>(p.ldx), &beta, p.y, p.y_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF,
        static_cast<int>(p.ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (p.bias) launch_add_bias(p, stream);
  }
};

CublasGemm::CublasGemm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CublasGemm::~CublasGemm() = default;

StatusOr<std::unique_ptr<CublasGemm>> CublasGemm::create(cudaStream_t stream) {
  auto impl = std::make_unique<Impl>();
  impl->stream = stream;
  if (cublasLtCreate(&impl->lt) != CUBLAS_STATUS_SUCCESS ||
      cublasCreate(&impl->blas) != CUBLAS_STATUS_SUCCESS) {
    return InternalError("cuBLAS could not be initialised");
  }
  if (cublasSetStream(impl->blas, stream) != CUBLAS_STATUS_SUCCESS) {
    return InternalError("cublasSetStream failed");
  }
  if (cudaMalloc(&impl->workspace, kWorkspaceBytes) != cudaSuccess) {
    cudaGetLastError();
    impl->workspace = nullptr;
    return ResourceExhaustedError("out of GPU memory for the cuBLAS workspace");
  }
  if (cublasSetWorkspace(impl->blas, impl->workspace, kWorkspaceBytes) !=
      CUBLAS_STATUS_SUCCESS) {
    return InternalError("cublasSetWorkspace failed");
  }
  return std::unique_ptr<CublasGemm>(new CublasGemm(std::move(impl)));
}

void CublasGemm::run(const GemmProblem& p) {
  if (p.m == 0 || p.n == 0) return;
  if (launch_gemv(p, impl_->stream)) return;  // decode steps of a few sequences
  Impl& impl = *impl_;
  const bool fused_bias = p.bias != nullptr && p.y_dtype == DType::kBF16;
  const Key key{p.m,
                p.n,
                p.k,
                p.ldx,
                p.ldw,
                p.ldy,
                static_cast<int>(p.y_dtype),
                fused_bias ? 1 : 0,
                alignment(p.x),
                alignment(p.w),
                alignment(p.y),
                fused_bias ? alignment(p.bias) : 0};
  Plan& plan = impl.plan_for(p, key);
  if (!plan.has_algo) {
    impl.fallback(p);
    return;
  }
  if (fused_bias) {
    SIEVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)));
  }
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status =
      cublasLtMatmul(impl.lt, plan.desc, &alpha, p.w, plan.a, p.x, plan.b, &beta, p.y, plan.d,
                     p.y, plan.d, &plan.algo, impl.workspace, kWorkspaceBytes, impl.stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {  // the heuristic's pick declined this layout
    plan.has_algo = false;
    impl.fallback(p);
    return;
  }
  SIEVE_CUBLAS_CHECK(status);
  if (p.bias && !fused_bias) launch_add_bias(p, impl.stream);
}

}  // namespace sieve::kernels::cuda
