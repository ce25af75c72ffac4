// Exploration (not product code): GEMV variants for batch-1 decode at Llama-3.1-8B's shapes,
// against a read-only stream of the same bytes, and the effect of programmatic dependent launch
// (PDL) between a small kernel and a GEMV inside a CUDA graph.
//   nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a bench/gpu/gemv_explore.cu -o gemv_explore

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

using bf16 = __nv_bfloat16;

#define CK(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void griddep_launch() { asm volatile("griddepcontrol.launch_dependents;"); }

__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

__global__ void read_floor(const uint4* p, int64_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint4 v = ld_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// The product kernel of session 2 (warp-per-4-rows), copied for comparison.
__global__ void __launch_bounds__(128) gemv_warp(const bf16* x, const bf16* w, bf16* y, int n, int k) {
  constexpr int R = 4;
  const int warp = blockIdx.x * 4 + threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * R;
  if (row0 >= n) return;
  const bf16* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + int64_t(min(row0 + r, n - 1)) * k;
  float acc[R] = {};
  const int vecs = k / 8;
#pragma unroll 4
  for (int v = lane; v < vecs; v += 32) {
    uint4 wv[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wv[r] = __ldg(reinterpret_cast<const uint4*>(wr[r] + v * 8));
    uint4 xv = *reinterpret_cast<const uint4*>(x + v * 8);
    const bf16* xe = reinterpret_cast<const bf16*>(&xv);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bf16* we = reinterpret_cast<const bf16*>(&wv[r]);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[r] = fmaf(__bfloat162float(we[j]), __bfloat162float(xe[j]), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0)
    for (int r = 0; r < R && row0 + r < n; ++r) y[row0 + r] = __float2bfloat16_rn(acc[r]);
}

// Block-per-kRows-rows: every thread issues kRows × kUnroll 16-byte weight loads at once.
template <int kThreads, int kRows, int kUnroll, bool kPdl, bool kNoAlloc>
__global__ void __launch_bounds__(kThreads)
    gemv_block(const bf16* x, const bf16* w, bf16* y, int n, int k) {
  constexpr int kWarps = kThreads / 32;
  __shared__ float red[kWarps][kRows];
  const int row0 = blockIdx.x * kRows;
  const int vecs = k / 8;
  const uint4* wr[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    wr[r] = reinterpret_cast<const uint4*>(w + int64_t(min(row0 + r, n - 1)) * k);
  float acc[kRows] = {};
  bool waited = !kPdl;
  for (int base = 0; base < vecs; base += kThreads * kUnroll) {
    uint4 wv[kRows][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = base + u * kThreads + threadIdx.x;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (v < vecs) {
          wv[r][u] = kNoAlloc ? ld_stream(wr[r] + v) : __ldg(wr[r] + v);
        } else {
          wv[r][u] = make_uint4(0, 0, 0, 0);
        }
      }
    }
    if (!waited) {
      griddep_wait();
      waited = true;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = base + u * kThreads + threadIdx.x;
      if (v >= vecs) continue;
      uint4 xv = *reinterpret_cast<const uint4*>(x + v * 8);
      const bf16* xe = reinterpret_cast<const bf16*>(&xv);
      float xf[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) xf[j] = __bfloat162float(xe[j]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const bf16* we = reinterpret_cast<const bf16*>(&wv[r][u]);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r] = fmaf(__bfloat162float(we[j]), xf[j], acc[r]);
      }
    }
  }
  if (kPdl) griddep_launch();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float s = warp_sum(acc[r]);
    if (lane == 0) red[warp][r] = s;
  }
  __syncthreads();
  if (threadIdx.x < kRows && row0 + threadIdx.x < n) {
    float s = 0;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) s += red[i][threadIdx.x];
    y[row0 + threadIdx.x] = __float2bfloat16_rn(s);
  }
}

// A stand-in for the small kernels between GEMVs (norm, rope, attention): ~kSpin ns busy on a
// few blocks; it lets its dependents launch at once.
__global__ void small_kernel(bf16* x, int n, long long spin_ns, bool trigger) {
  if (trigger) griddep_launch();
  griddep_wait();
  long long start;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  long long now = start;
  while (now - start < spin_ns) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    x[i] = __float2bfloat16_rn(__bfloat162float(x[i]) * 0.5f + 0.25f);
}

struct Shape {
  const char* name;
  int n, k;
};

using GemvFn = void (*)(const bf16*, const bf16*, bf16*, int, int);

struct Variant {
  const char* name;
  GemvFn fn;
  int threads, rows;  // rows per block
};

template <int T, int R, int U, bool P, bool NA>
Variant block_variant(const char* name) {
  return {name, gemv_block<T, R, U, P, NA>, T, R};
}

int main() {
  const Shape shapes[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096},
                          {"down", 4096, 14336}, {"lm_head", 128256, 4096}};
  const size_t pool_bytes = size_t(4) << 30;  // 4 GiB: cycling through it defeats the 50 MB L2
  char* pool;
  CK(cudaMalloc(&pool, pool_bytes));
  CK(cudaMemset(pool, 0x3c, pool_bytes));
  bf16 *x, *y;
  CK(cudaMalloc(&x, 64 << 20));
  CK(cudaMalloc(&y, 64 << 20));
  CK(cudaMemset(x, 0x3c, 64 << 20));
  uint32_t* sink;
  CK(cudaMalloc(&sink, 4));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));

  std::vector<Variant> variants = {
      {"warp4 (s2)", gemv_warp, 128, 16},
      block_variant<128, 4, 4, false, false>("blk128 r4 u4"),
      block_variant<128, 4, 4, false, true>("blk128 r4 u4 na"),
      block_variant<128, 2, 4, false, true>("blk128 r2 u4 na"),
      block_variant<128, 8, 2, false, true>("blk128 r8 u2 na"),
      block_variant<256, 4, 2, false, true>("blk256 r4 u2 na"),
      block_variant<256, 2, 2, false, true>("blk256 r2 u2 na"),
      block_variant<256, 8, 1, false, true>("blk256 r8 u1 na"),
      block_variant<64, 4, 8, false, true>("blk64 r4 u8 na"),
      block_variant<128, 1, 4, false, true>("blk128 r1 u4 na"),
      block_variant<512, 2, 1, false, true>("blk512 r2 u1 na"),
  };
  const int iters = 50;
  for (const Shape& s : shapes) {
    const size_t bytes = size_t(s.n) * s.k * 2;
    const int copies = int(pool_bytes / bytes);
    // read floor of the same bytes
    float ms;
    {
      const int64_t n16 = int64_t(bytes / 16);
      for (int i = 0; i < 5; ++i) read_floor<<<sms * 8, 256>>>(reinterpret_cast<uint4*>(pool + (i % copies) * bytes), n16, sink);
      CK(cudaEventRecord(a));
      for (int i = 0; i < iters; ++i)
        read_floor<<<sms * 8, 256>>>(reinterpret_cast<uint4*>(pool + (i % copies) * bytes), n16, sink);
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      CK(cudaEventElapsedTime(&ms, a, b));
      std::printf("%-8s %-18s %8.2f us %7.0f GB/s\n", s.name, "read floor", ms * 1e3 / iters,
                  bytes / (ms * 1e-3 / iters) / 1e9);
    }
    for (const Variant& v : variants) {
      const int blocks = (s.n + v.rows - 1) / v.rows;
      for (int i = 0; i < 5; ++i)
        v.fn<<<blocks, v.threads>>>(x, reinterpret_cast<bf16*>(pool + (i % copies) * bytes), y, s.n, s.k);
      CK(cudaGetLastError());
      CK(cudaEventRecord(a));
      for (int i = 0; i < iters; ++i)
        v.fn<<<blocks, v.threads>>>(x, reinterpret_cast<bf16*>(pool + (i % copies) * bytes), y, s.n, s.k);
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      CK(cudaEventElapsedTime(&ms, a, b));
      std::printf("%-8s %-18s %8.2f us %7.0f GB/s\n", s.name, v.name, ms * 1e3 / iters,
                  bytes / (ms * 1e-3 / iters) / 1e9);
    }
  }

  // PDL inside a graph: 32 layers of [small, gemv qkv, small x3, gemv o, small, gemv gate_up,
  // small, gemv down] on distinct weights, as a decode step's shape.
  const Shape layer[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096},
                         {"down", 4096, 14336}};
  const int smalls_before[] = {1, 3, 1, 1};
  size_t layer_bytes = 0;
  for (const Shape& s : layer) layer_bytes += size_t(s.n) * s.k * 2;
  char* weights;
  const int layers = 32;
  CK(cudaMalloc(&weights, layer_bytes * layers));
  CK(cudaMemset(weights, 0x3c, layer_bytes * layers));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  for (long long spin : {0LL, 3000LL}) {
    for (int mode = 0; mode < 3; ++mode) {  // 0: no PDL, 1: PDL, 2: gemvs only
      cudaGraph_t g;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      char* wp = weights;
      for (int l = 0; l < layers; ++l) {
        for (int j = 0; j < 4; ++j) {
          if (mode != 2)
            for (int t = 0; t < smalls_before[j]; ++t) {
              cudaLaunchConfig_t cfg = {};
              cfg.gridDim = dim3(8);
              cfg.blockDim = dim3(256);
              cfg.stream = st;
              cudaLaunchAttribute attr;
              attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
              attr.val.programmaticStreamSerializationAllowed = 1;
              cfg.attrs = &attr;
              cfg.numAttrs = mode == 1 ? 1 : 0;
              CK(cudaLaunchKernelEx(&cfg, small_kernel, x, 4096, spin, mode == 1));
            }
          const Shape& s = layer[j];
          cudaLaunchConfig_t cfg = {};
          cfg.gridDim = dim3((s.n + 3) / 4);
          cfg.blockDim = dim3(128);
          cfg.stream = st;
          cudaLaunchAttribute attr;
          attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
          attr.val.programmaticStreamSerializationAllowed = 1;
          cfg.attrs = &attr;
          cfg.numAttrs = mode == 1 ? 1 : 0;
          if (mode == 1) {
            CK(cudaLaunchKernelEx(&cfg, gemv_block<128, 4, 4, true, true>, (const bf16*)x,
                                  (const bf16*)wp, y, s.n, s.k));
          } else {
            CK(cudaLaunchKernelEx(&cfg, gemv_block<128, 4, 4, false, true>, (const bf16*)x,
                                  (const bf16*)wp, y, s.n, s.k));
          }
          wp += size_t(s.n) * s.k * 2;
        }
      }
      CK(cudaStreamEndCapture(st, &g));
      cudaGraphExec_t ge;
      CK(cudaGraphInstantiate(&ge, g, 0));
      for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ge, st));
      CK(cudaEventRecord(a, st));
      const int reps = 20;
      for (int i = 0; i < reps; ++i) CK(cudaGraphLaunch(ge, st));
      CK(cudaEventRecord(b, st));
      CK(cudaEventSynchronize(b));
      float ms;
      CK(cudaEventElapsedTime(&ms, a, b));
      const char* names[] = {"no PDL", "PDL", "gemvs only"};
      std::printf("graph spin %4lld ns %-10s %7.3f ms a step (%zu MB weights: %6.0f GB/s)\n", spin,
                  names[mode], ms / reps, layer_bytes * layers >> 20,
                  layer_bytes * layers / (ms / reps * 1e-3) / 1e9);
      CK(cudaGraphExecDestroy(ge));
      CK(cudaGraphDestroy(g));
    }
  }
  return 0;
}
