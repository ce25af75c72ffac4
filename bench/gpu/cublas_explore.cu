// Exploration (not product code): how far cuBLASLt's first heuristic choice is from the fastest
// of its top candidates for decode-shaped GEMMs (M = 5..256 rows, Llama-3.1-8B's layers), each
// timed on weights rotated through 4 GiB (so L2 holds none of them), against the weight bytes
// over 3.0 TB/s.
//   nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a bench/gpu/cublas_explore.cu \
//     -lcublasLt -o cublas_explore

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                             \
  do {                                                                                    \
    cudaError_t e_ = (x);                                                                 \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)
#define CB(x)                                                                    \
  do {                                                                           \
    cublasStatus_t s_ = (x);                                                     \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                           \
      std::fprintf(stderr, "%s:%d %s: %d\n", __FILE__, __LINE__, #x, int(s_));   \
      std::exit(1);                                                              \
    }                                                                            \
  } while (0)

int main() {
  struct Shape {
    const char* name;
    int n, k;
  };
  const Shape shapes[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096},
                          {"down", 4096, 14336}};
  const size_t pool_bytes = size_t(4) << 30;
  char* pool;
  CK(cudaMalloc(&pool, pool_bytes));
  CK(cudaMemset(pool, 0x3c, pool_bytes));
  void *x, *y, *ws;
  CK(cudaMalloc(&x, 64 << 20));
  CK(cudaMalloc(&y, 64 << 20));
  CK(cudaMemset(x, 0x3c, 64 << 20));
  const size_t ws_bytes = 32 << 20;
  CK(cudaMalloc(&ws, ws_bytes));
  cublasLtHandle_t lt;
  CB(cublasLtCreate(&lt));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::printf("%-8s %4s %10s %10s %5s %10s %9s %9s\n", "shape", "M", "floor_us", "heur0_us", "best",
              "best_us", "heur0/fl", "best/fl");
  double total_floor[7] = {}, total_h0[7] = {}, total_best[7] = {};
  const int ms[] = {5, 8, 16, 32, 64, 128, 256};
  for (int mi = 0; mi < 7; ++mi) {
    const int m = ms[mi];
    for (const Shape& s : shapes) {
      cublasLtMatmulDesc_t desc;
      CB(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      CB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
      CB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
      cublasLtMatrixLayout_t la, lb, ld;
      CB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, s.k, s.n, s.k));
      CB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, s.k, m, s.k));
      CB(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, s.n, m, s.n));
      cublasLtMatmulPreference_t pref;
      CB(cublasLtMatmulPreferenceCreate(&pref));
      CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                              &ws_bytes, sizeof(ws_bytes)));
      cublasLtMatmulHeuristicResult_t results[16];
      int found = 0;
      CB(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 16, results, &found));
      const size_t bytes = size_t(s.n) * s.k * 2;
      const int copies = int(pool_bytes / bytes);
      const float alpha = 1, beta = 0;
      double h0 = 0, best = 1e30;
      int best_i = -1;
      for (int i = 0; i < found; ++i) {
        auto run = [&](int it) {
          return cublasLtMatmul(lt, desc, &alpha, pool + (it % copies) * bytes, la, x, lb, &beta,
                                y, ld, y, ld, &results[i].algo, ws, ws_bytes, st);
        };
        bool ok = true;
        for (int it = 0; it < 3; ++it) ok = ok && run(it) == CUBLAS_STATUS_SUCCESS;
        if (!ok) continue;
        const int iters = 20;
        CK(cudaEventRecord(a, st));
        for (int it = 0; it < iters; ++it) CB(run(it));
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        float t;
        CK(cudaEventElapsedTime(&t, a, b));
        const double us = t * 1e3 / iters;
        if (i == 0) h0 = us;
        if (us < best) {
          best = us;
          best_i = i;
        }
      }
      const double floor_us = bytes / 3.0e12 * 1e6;
      std::printf("%-8s %4d %10.1f %10.1f %5d %10.1f %8.0f%% %8.0f%%\n", s.name, m, floor_us, h0,
                  best_i, best, floor_us / h0 * 100, floor_us / best * 100);
      total_floor[mi] += floor_us;
      total_h0[mi] += h0;
      total_best[mi] += best;
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(ld);
      cublasLtMatmulDescDestroy(desc);
    }
    std::printf("layer    %4d %10.1f %10.1f %5s %10.1f %8.0f%% %8.0f%%\n", m, total_floor[mi],
                total_h0[mi], "", total_best[mi], total_floor[mi] / total_h0[mi] * 100,
                total_floor[mi] / total_best[mi] * 100);
  }
  return 0;
}
