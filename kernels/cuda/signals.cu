// Compression signals on the GPU: one block per (layer, KV head) walks the head's valid slots.
// Straightforward rather than fast: they run only on the steps where a policy acts, for the
// sequences it acts on (the tensor-core version is future work; bench/ measures the share).

#include <cfloat>
#include <cstdio>
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_write.cuh"
#include "kernels/cuda/signals.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGroup = 16;  // query heads per KV head
constexpr int kMaxHeadDim = 256;

// One block per row; Unit is the widest access (16 bytes down to 1) that the pointers, strides
// and row length allow: a column slice of a bf16 buffer may start at any element.
template <typename Unit>
__global__ void copy_rows_kernel(Unit* dst, int64_t dst_stride, int64_t num_dst_rows,
                                 const int32_t* dst_rows, const Unit* src, int64_t src_stride,
                                 int64_t num_src_rows, const int32_t* src_rows, int units) {
  const int64_t i = blockIdx.x;
  const int32_t d = dst_rows[i], s = src_rows[i];
  if (d < 0 || d >= num_dst_rows || s < 0 || s >= num_src_rows) {
    if (threadIdx.x == 0) printf("copy_rows: row %d -> %d\n", s, d);
    __trap();
  }
  for (int u = threadIdx.x; u < units; u += blockDim.x)
    dst[d * dst_stride + u] = src[s * src_stride + u];
}

__device__ float block_sum(float x, float* scratch) {
  x = warp_sum(x);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  return total;
}

__device__ float block_max(float x, float* scratch) {
  x = warp_max(x);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  float m = -FLT_MAX;
  for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

template <typename KvT, typename QT>
__global__ void __launch_bounds__(kThreads) kv_signals_kernel(KvArena a, SignalPointers p) {
  __shared__ float q_s[kMaxGroup][kMaxHeadDim];
  __shared__ float anchor_s[kMaxHeadDim];
  __shared__ float max_s[kMaxGroup], inv_sum_s[kMaxGroup];
  __shared__ float scratch[kThreads / 32];
  const int head = blockIdx.x, layer = blockIdx.y;
  const int d = a.head_dim;
  const int group = p.num_heads > 0 ? p.num_heads / a.num_kv_heads : 1;
  const int64_t list = static_cast<int64_t>(layer) * a.num_kv_heads + head;
  int prefix_end = p.num_tokens, gap_end = p.num_tokens, count = p.num_tokens;
  if (p.head_lens) {
    prefix_end = p.head_lens[list];
    gap_end = p.gap_end;
    count = prefix_end + p.num_tokens - gap_end;
  }
  const KvPageGeometry geometry = arena_geometry(a);
  auto row = [&](int v, int kv) {
    const int j = v < prefix_end ? v : gap_end + (v - prefix_end);
    const int64_t page = p.page_table[j / a.tokens_per_page];
    return arena_row<KvT>(a, geometry, layer, page, kv, head, j % a.tokens_per_page);
  };
  using Row = decltype(row(0, 0));
  auto dot = [&](const float* q, const Row& k) {
    float s = 0;
    for (int i = 0; i < d; ++i) s += q[i] * to_float(k[i]);
    return s;
  };
  const int64_t out_row = list * p.slot_stride;
  if (p.key_norms || p.value_norms) {
    for (int v = threadIdx.x; v < count; v += kThreads) {
      if (p.key_norms) {
        const Row k = row(v, 0);
        float s = 0;
        for (int i = 0; i < d; ++i) s += to_float(k[i]) * to_float(k[i]);
        p.key_norms[out_row + v] = sqrtf(s);
      }
      if (p.value_norms) {
        const Row x = row(v, 1);
        float s = 0;
        for (int i = 0; i < d; ++i) s += to_float(x[i]) * to_float(x[i]);
        p.value_norms[out_row + v] = sqrtf(s);
      }
    }
  }
  if (p.key_anchor_dot) {
    for (int i = threadIdx.x; i < d; i += kThreads) anchor_s[i] = 0;
    __syncthreads();
    for (int v = threadIdx.x; v < count; v += kThreads) {
      const Row k = row(v, 0);
      float s = 0;
      for (int i = 0; i < d; ++i) s += to_float(k[i]) * to_float(k[i]);
      const float inv = 1.0f / fmaxf(sqrtf(s), 1e-12f);
      for (int i = 0; i < d; ++i) atomicAdd(&anchor_s[i], to_float(k[i]) * inv);
    }
    __syncthreads();
    for (int v = threadIdx.x; v < count; v += kThreads) {
      const Row k = row(v, 0);
      float s = 0, n = 0;
      for (int i = 0; i < d; ++i) {
        s += to_float(k[i]) * anchor_s[i];
        n += to_float(k[i]) * to_float(k[i]);
      }
      p.key_anchor_dot[out_row + v] =
          s / fmaxf(static_cast<float>(count), 1.0f) / fmaxf(sqrtf(n), 1e-12f);
    }
    __syncthreads();
  }
  if (p.num_queries == 0) return;
  const QT* queries = static_cast<const QT*>(p.queries);
  const int w = p.num_queries;
  for (int g = 0; g < group; ++g) {
    if (p.window_attention) {
      float* out = p.window_attention +
                   (static_cast<int64_t>(layer) * p.num_heads + head * group + g) * p.slot_stride;
      for (int v = threadIdx.x; v < count; v += kThreads) out[v] = 0;
    }
  }
  if (p.window_attention_group_max) {
    for (int v = threadIdx.x; v < count; v += kThreads)
      p.window_attention_group_max[out_row + v] = 0;
  }
  for (int j = 0; j < w; ++j) {
    const int limit = count - (w - 1 - j);
    __syncthreads();
    for (int e = threadIdx.x; e < group * d; e += kThreads) {
      const int g = e / d, i = e % d;
      const int64_t q_index = layer * p.query_layer_stride + j * p.query_row_stride +
                              static_cast<int64_t>(head * group + g) * d + i;
      q_s[g][i] = to_float(queries[q_index]);
    }
    __syncthreads();
    // Pass 1: each query head's max and normaliser over the slots it sees.
    for (int g = 0; g < group; ++g) {
      float m = -FLT_MAX;
      for (int v = threadIdx.x; v < limit; v += kThreads)
        m = fmaxf(m, dot(q_s[g], row(v, 0)) * p.scale);
      m = block_max(m, scratch);
      float s = 0;
      for (int v = threadIdx.x; v < limit; v += kThreads)
        s += __expf(dot(q_s[g], row(v, 0)) * p.scale - m);
      s = block_sum(s, scratch);
      if (threadIdx.x == 0) {
        max_s[g] = m;
        inv_sum_s[g] = 1.0f / s;
      }
    }
    __syncthreads();
    // Pass 2: the probabilities into the sums.
    for (int v = threadIdx.x; v < limit; v += kThreads) {
      const Row k = row(v, 0);
      float best = 0;
      for (int g = 0; g < group; ++g) {
        const float prob = __expf(dot(q_s[g], k) * p.scale - max_s[g]) * inv_sum_s[g];
        best = fmaxf(best, prob);
        if (p.window_attention) {
          p.window_attention[(static_cast<int64_t>(layer) * p.num_heads + head * group + g) *
                                 p.slot_stride +
                             v] += prob;
        }
      }
      if (p.window_attention_group_max) p.window_attention_group_max[out_row + v] += best;
    }
  }
}

}  // namespace

void launch_copy_rows(void* dst, int64_t dst_stride_bytes, int64_t num_dst_rows,
                      const int32_t* dst_rows, const void* src, int64_t src_stride_bytes,
                      int64_t num_src_rows, const int32_t* src_rows, int64_t n, int row_bytes,
                      cudaStream_t stream) {
  if (n == 0 || row_bytes == 0) return;
  const uint64_t any = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) |
                       static_cast<uint64_t>(dst_stride_bytes) |
                       static_cast<uint64_t>(src_stride_bytes) | static_cast<uint64_t>(row_bytes);
  int unit = 16;
  while (any % unit != 0) unit /= 2;
  auto launch = [&](auto* typed_dst) {
    using Unit = std::remove_cv_t<std::remove_pointer_t<decltype(typed_dst)>>;
    copy_rows_kernel<Unit><<<static_cast<unsigned>(n), 128, 0, stream>>>(
        typed_dst, dst_stride_bytes / unit, num_dst_rows, dst_rows, static_cast<const Unit*>(src),
        src_stride_bytes / unit, num_src_rows, src_rows, row_bytes / unit);
  };
  switch (unit) {
    case 16:
      launch(static_cast<uint4*>(dst));
      break;
    case 8:
      launch(static_cast<uint2*>(dst));
      break;
    case 4:
      launch(static_cast<uint32_t*>(dst));
      break;
    case 2:
      launch(static_cast<uint16_t*>(dst));
      break;
    default:
      launch(static_cast<uint8_t*>(dst));
      break;
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

void launch_kv_signals(const KvArena& arena, const SignalPointers& p, cudaStream_t stream) {
  SIEVE_CHECK_LE(arena.head_dim, kMaxHeadDim);
  SIEVE_CHECK(p.num_queries == 0 || p.num_heads / arena.num_kv_heads <= kMaxGroup)
      << "kv_signals takes at most " << kMaxGroup << " query heads per KV head";
  const dim3 grid(arena.num_kv_heads, arena.num_layers);
  const bool f32_queries = p.query_dtype == DType::kF32;
  if (arena.dtype == DType::kBF16) {
    if (f32_queries) {
      kv_signals_kernel<bf16, float><<<grid, kThreads, 0, stream>>>(arena, p);
    } else {
      kv_signals_kernel<bf16, bf16><<<grid, kThreads, 0, stream>>>(arena, p);
    }
  } else if (arena.dtype == DType::kU8) {  // quantized formats, dequantized element by element
    if (f32_queries) {
      kv_signals_kernel<QuantRow, float><<<grid, kThreads, 0, stream>>>(arena, p);
    } else {
      kv_signals_kernel<QuantRow, bf16><<<grid, kThreads, 0, stream>>>(arena, p);
    }
  } else {
    if (f32_queries) {
      kv_signals_kernel<float, float><<<grid, kThreads, 0, stream>>>(arena, p);
    } else {
      kv_signals_kernel<float, bf16><<<grid, kThreads, 0, stream>>>(arena, p);
    }
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
