// Compression signals on the GPU: one block per (layer, KV head) walks the head's valid slots, a
// warp per slot (see kv_signals_kernel). They run only on the steps where a policy acts, for the
// sequences it acts on.

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

// Each warp takes one slot at a time: its key row is read once, coalesced, into the warp's
// shared row, and every lane scores it against its own queries. Window attention needs each
// query's softmax over all slots first, so it reads the keys twice: pass A (running max and sum
// per query, combined across warps) and pass B (the probabilities into the outputs; the running
// max over windows is raised by the slot's owner warp alone, so it needs no atomics). Skipped
// slots (KvSignalArgs::skip_begin) are neither read nor counted. Queries are
// taken in chunks of kChunkPairs (query, head-of-group) pairs, each lane owning 4 contiguous
// pairs; a chunk holds whole queries (every head of the group).
constexpr int kWarps = kThreads / 32;
constexpr int kChunkPairs = 128;
constexpr int kPairsPerLane = kChunkPairs / 32;

struct SignalSmem {
  float* q;       // [head_dim][kChunkPairs]: the chunk's queries, dimension-major
  float* k;       // [kWarps][head_dim]: each warp's current key (or value) row
  float* probs;   // [kWarps][kChunkPairs]
  float* max;     // [kWarps][kChunkPairs], then the chunk's combined max in row 0
  float* sum;     // [kWarps][kChunkPairs], then 1 / the combined sum in row 0
  float* anchor;  // [head_dim]
  static size_t bytes(int head_dim) {
    return sizeof(float) * (static_cast<size_t>(head_dim) * kChunkPairs + kWarps * head_dim +
                            3 * kWarps * kChunkPairs + head_dim);
  }
  __device__ explicit SignalSmem(float* base, int head_dim)
      : q(base),
        k(q + head_dim * kChunkPairs),
        probs(k + kWarps * head_dim),
        max(probs + kWarps * kChunkPairs),
        sum(max + kWarps * kChunkPairs),
        anchor(sum + kWarps * kChunkPairs) {}
};

// The warp's row of `src` (head_dim elements: a pointer, or a QuantRow) into `dst` as f32;
// returns the sum of squares.
template <typename Row>
__device__ __forceinline__ float load_row(const Row& src, float* dst, int d) {
  const int lane = threadIdx.x % 32;
  float squares = 0;
  for (int i = lane; i < d; i += 32) {
    const float x = to_float(src[i]);
    dst[i] = x;
    squares += x * x;
  }
  __syncwarp();
  return warp_sum(squares);
}

// Scores of the lane's kPairsPerLane pairs (q columns 4 * lane ...) against the warp's row.
__device__ __forceinline__ void score_pairs(const float* q, const float* k, int d, float* out) {
  const int lane = threadIdx.x % 32;
  float acc[kPairsPerLane] = {};
#pragma unroll 4
  for (int i = 0; i < d; ++i) {
    const float4 qv = *reinterpret_cast<const float4*>(q + i * kChunkPairs + kPairsPerLane * lane);
    const float ki = k[i];
    acc[0] += qv.x * ki;
    acc[1] += qv.y * ki;
    acc[2] += qv.z * ki;
    acc[3] += qv.w * ki;
  }
#pragma unroll
  for (int t = 0; t < kPairsPerLane; ++t) out[t] = acc[t];
}

template <typename KvT, typename QT>
__global__ void __launch_bounds__(kThreads) kv_signals_kernel(KvArena a, SignalPointers p) {
  extern __shared__ __align__(16) float smem_base[];
  const int d = a.head_dim;
  SignalSmem sm(smem_base, d);
  const int head = blockIdx.x, layer = blockIdx.y;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
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
  float* my_row = sm.k + warp * d;
  const int64_t out_row = list * p.slot_stride;
  auto skipped = [&](int v) {
    return (v >= p.skip_begin[0] && v < p.skip_end[0]) ||
           (v >= p.skip_begin[1] && v < p.skip_end[1]);
  };

  // Norms, and the sum of unit keys for the anchor.
  const bool anchor = p.key_anchor_dot != nullptr;
  if (p.key_norms || p.value_norms || anchor) {
    for (int i = threadIdx.x; i < d; i += kThreads) sm.anchor[i] = 0;
    __syncthreads();
    float partial[kMaxHeadDim / 32] = {};
    for (int v = warp; v < count; v += kWarps) {
      if (p.key_norms || anchor) {
        const float norm = sqrtf(load_row(row(v, 0), my_row, d));
        if (p.key_norms && lane == 0) p.key_norms[out_row + v] = norm;
        if (anchor) {
          const float inv = 1.0f / fmaxf(norm, 1e-12f);
          for (int i = lane, r = 0; i < d; i += 32, ++r) partial[r] += my_row[i] * inv;
        }
        __syncwarp();
      }
      if (p.value_norms) {
        const float norm = sqrtf(load_row(row(v, 1), my_row, d));
        if (lane == 0) p.value_norms[out_row + v] = norm;
        __syncwarp();
      }
    }
    if (anchor) {
      for (int i = lane, r = 0; i < d; i += 32, ++r) atomicAdd(&sm.anchor[i], partial[r]);
      __syncthreads();
      for (int v = warp; v < count; v += kWarps) {
        const float norm = sqrtf(load_row(row(v, 0), my_row, d));
        float dot = 0;
        for (int i = lane; i < d; i += 32) dot += my_row[i] * sm.anchor[i];
        dot = warp_sum(dot);
        if (lane == 0) {
          p.key_anchor_dot[out_row + v] =
              dot / fmaxf(static_cast<float>(count), 1.0f) / fmaxf(norm, 1e-12f);
        }
        __syncwarp();
      }
    }
  }
  if (p.num_queries == 0 ||
      (!p.window_attention && !p.window_attention_group_max && !p.window_attention_max)) {
    return;
  }

  const QT* queries = static_cast<const QT*>(p.queries);
  const int w = p.num_queries;
  float* wa = p.window_attention;
  for (int g = 0; g < group && wa; ++g) {
    float* out =
        wa + (static_cast<int64_t>(layer) * p.num_heads + head * group + g) * p.slot_stride;
    for (int v = threadIdx.x; v < count; v += kThreads) out[v] = 0;
  }
  if (p.window_attention_group_max) {
    for (int v = threadIdx.x; v < count; v += kThreads)
      p.window_attention_group_max[out_row + v] = 0;
  }
  const int queries_per_chunk = kChunkPairs / group;
  float* my_probs = sm.probs + warp * kChunkPairs;
  for (int j0 = 0; j0 < w; j0 += queries_per_chunk) {
    const int nq = min(queries_per_chunk, w - j0);
    const int pairs = nq * group;
    __syncthreads();  // the previous chunk is done with q and the outputs' zeros are written
    for (int e = threadIdx.x; e < kChunkPairs * d; e += kThreads) {
      const int pair = e / d, i = e % d;
      float x = 0;
      if (pair < pairs) {
        const int j = j0 + pair / group, g = pair % group;
        x = to_float(queries[layer * p.query_layer_stride + j * p.query_row_stride +
                             static_cast<int64_t>(head * group + g) * d + i]);
      }
      sm.q[i * kChunkPairs + pair] = x;
    }
    __syncthreads();
    // The slots query j sees: the window's queries are the sequence's last w tokens.
    int limit[kPairsPerLane];
#pragma unroll
    for (int t = 0; t < kPairsPerLane; ++t) {
      const int pair = kPairsPerLane * lane + t;
      limit[t] = pair < pairs ? count - (w - 1 - (j0 + pair / group)) : 0;
    }
    // Pass A: each pair's running max and sum over the warp's slots.
    float m[kPairsPerLane], l[kPairsPerLane];
#pragma unroll
    for (int t = 0; t < kPairsPerLane; ++t) {
      m[t] = -FLT_MAX;
      l[t] = 0;
    }
    for (int v = warp; v < count; v += kWarps) {
      if (skipped(v)) continue;
      load_row(row(v, 0), my_row, d);
      float s[kPairsPerLane];
      score_pairs(sm.q, my_row, d, s);
#pragma unroll
      for (int t = 0; t < kPairsPerLane; ++t) {
        if (v >= limit[t]) continue;
        const float x = s[t] * p.scale;
        if (x > m[t]) {
          l[t] = l[t] * __expf(m[t] - x) + 1.0f;
          m[t] = x;
        } else {
          l[t] += __expf(x - m[t]);
        }
      }
      __syncwarp();
    }
#pragma unroll
    for (int t = 0; t < kPairsPerLane; ++t) {
      sm.max[warp * kChunkPairs + kPairsPerLane * lane + t] = m[t];
      sm.sum[warp * kChunkPairs + kPairsPerLane * lane + t] = l[t];
    }
    __syncthreads();
    // Combine the warps' running values: max, then 1 / sum (0 for a pair without slots).
    float best = -FLT_MAX, total = 0;
    if (threadIdx.x < kChunkPairs) {
      for (int x = 0; x < kWarps; ++x) best = fmaxf(best, sm.max[x * kChunkPairs + threadIdx.x]);
      for (int x = 0; x < kWarps; ++x) {
        const float lx = sm.sum[x * kChunkPairs + threadIdx.x];
        if (lx > 0) total += lx * __expf(sm.max[x * kChunkPairs + threadIdx.x] - best);
      }
    }
    __syncthreads();  // every thread has read the per-warp rows
    if (threadIdx.x < kChunkPairs) {
      sm.max[threadIdx.x] = best;
      sm.sum[threadIdx.x] = total > 0 ? 1.0f / total : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kPairsPerLane; ++t) {
      m[t] = sm.max[kPairsPerLane * lane + t];
      l[t] = sm.sum[kPairsPerLane * lane + t];
    }
    // Pass B: probabilities, summed over the chunk's queries per head (window attention), as
    // the max over the group's heads (group max) and as the max over both (running max).
    for (int v = warp; v < count; v += kWarps) {
      if (skipped(v)) continue;  // their outputs keep the zeros written above
      load_row(row(v, 0), my_row, d);
      float s[kPairsPerLane];
      score_pairs(sm.q, my_row, d, s);
#pragma unroll
      for (int t = 0; t < kPairsPerLane; ++t) {
        my_probs[kPairsPerLane * lane + t] =
            v < limit[t] ? __expf(s[t] * p.scale - m[t]) * l[t] : 0.0f;
      }
      __syncwarp();
      if (wa) {
        for (int g = lane; g < group; g += 32) {
          float total = 0;
          for (int q = 0; q < nq; ++q) total += my_probs[q * group + g];
          wa[(static_cast<int64_t>(layer) * p.num_heads + head * group + g) * p.slot_stride + v] +=
              total;
        }
      }
      if (p.window_attention_group_max) {
        float total = 0;
        for (int q = lane; q < nq; q += 32) {
          float best = 0;
          for (int g = 0; g < group; ++g) best = fmaxf(best, my_probs[q * group + g]);
          total += best;
        }
        total = warp_sum(total);
        if (lane == 0) p.window_attention_group_max[out_row + v] += total;
      }
      if (p.window_attention_max) {
        float best = 0;
        for (int e = lane; e < pairs; e += 32) best = fmaxf(best, my_probs[e]);
        best = warp_max(best);
        if (lane == 0) {
          p.window_attention_max[out_row + v] = fmaxf(p.window_attention_max[out_row + v], best);
        }
      }
      __syncwarp();
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
  const size_t smem = SignalSmem::bytes(arena.head_dim);
  auto launch = [&](auto kernel) {
    SIEVE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(arena, p);
  };
  const bool f32_queries = p.query_dtype == DType::kF32;
  if (arena.dtype == DType::kBF16) {
    if (f32_queries) {
      launch(kv_signals_kernel<bf16, float>);
    } else {
      launch(kv_signals_kernel<bf16, bf16>);
    }
  } else if (arena.dtype == DType::kU8) {  // quantized formats, dequantized element by element
    if (f32_queries) {
      launch(kv_signals_kernel<QuantRow, float>);
    } else {
      launch(kv_signals_kernel<QuantRow, bf16>);
    }
  } else {
    if (f32_queries) {
      launch(kv_signals_kernel<float, float>);
    } else {
      launch(kv_signals_kernel<float, bf16>);
    }
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
