// KV cache kernels, templated on the arena's element type (a new KV format adds its conversion
// to common.cuh and an instance here).

#include <cstdio>

#include "core/check.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/kv_write.cuh"
#include "kernels/cuda/launch.cuh"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kCompactRows = 32;  // rows moved per round of compaction

// One block per token.
template <typename KvT, int kVec>
__global__ void __launch_bounds__(kThreads)
    write_kv_kernel(StridedRows k, StridedRows v, const int32_t* slot_mapping, KvArena a,
                    int layer) {
  wait_for_prior_kernels();
  allow_next_kernel();
  const int64_t t = blockIdx.x;
  write_kv_heads<KvT, kVec>(k, v, t, 0, a.num_kv_heads, slot_mapping[t], a, layer);
}

template <typename Unit>
__global__ void __launch_bounds__(kThreads)
    copy_pages_kernel(KvArena a, const int32_t* src_pages, const int32_t* dst_pages,
                      int64_t units_per_page) {
  const int64_t i = blockIdx.x;
  const int layer = blockIdx.y;
  const int32_t src = src_pages[i], dst = dst_pages[i];
  if (src < 0 || src >= a.num_pages || dst < 0 || dst >= a.num_pages) {
    if (threadIdx.x == 0) printf("copy_pages: page %d -> %d of %d\n", src, dst, a.num_pages);
    __trap();
  }
  Unit* base = static_cast<Unit*>(a.data) +
               static_cast<int64_t>(layer) * a.num_pages * units_per_page;
  const Unit* from = base + src * units_per_page;
  Unit* to = base + dst * units_per_page;
  for (int64_t u = threadIdx.x; u < units_per_page; u += kThreads) to[u] = from[u];
}

// One block per (kv_head, layer, K or V), in rounds of kCompactRows destinations: the block reads
// every source row of the round into shared memory, then writes them. Since keep[j] >= j ascends,
// a later round's sources lie past every earlier round's destinations, so nothing is read after
// it was overwritten: the same result as moving the rows one by one in order.
__global__ void __launch_bounds__(kThreads)
    compact_kv_kernel(KvArena a, const int32_t* page_table, int64_t capacity,
                      const int32_t* keep_slots, int64_t max_keep, const int32_t* keep_counts,
                      int row_units, int elem_bytes) {
  extern __shared__ uint32_t rows_s[];
  const int head = blockIdx.x, layer = blockIdx.y, kv = blockIdx.z;
  const int64_t list = static_cast<int64_t>(layer) * a.num_kv_heads + head;
  const int count = keep_counts[list];
  const int32_t* keep = keep_slots + list * max_keep;
  uint32_t* arena = static_cast<uint32_t*>(a.data);
  auto row_of = [&](int64_t slot) {
    const int64_t page = page_table[slot / a.tokens_per_page];
    return arena + arena_offset(a, layer, page, kv, head, slot % a.tokens_per_page) *
                       elem_bytes / 4;
  };
  for (int begin = 0; begin < count; begin += kCompactRows) {
    const int n = min(kCompactRows, count - begin);
    for (int w = threadIdx.x; w < n * row_units; w += kThreads) {
      const int r = w / row_units, u = w % row_units;
      const int j = begin + r;
      const int32_t from = keep[j];
      if (from < j || from >= capacity || (j > 0 && from <= keep[j - 1])) {
        printf("compact_kv: keep slot %d at %d (layer %d, head %d) is not ascending\n", from, j,
               layer, head);
        __trap();
      }
      rows_s[w] = row_of(from)[u];
    }
    __syncthreads();
    for (int w = threadIdx.x; w < n * row_units; w += kThreads) {
      const int r = w / row_units, u = w % row_units;
      const int j = begin + r;
      if (keep[j] != j) row_of(j)[u] = rows_s[w];
    }
    __syncthreads();
  }
}

}  // namespace

void launch_write_kv(const StridedRows& k, const StridedRows& v, const int32_t* slot_mapping,
                     const KvArena& arena, int layer, cudaStream_t stream) {
  const int64_t tokens = k.sizes[0];
  if (tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(tokens));
  dispatch_kv_write(k, v, arena, [&](auto instance) {
    using I = decltype(instance);
    launch_pdl(write_kv_kernel<typename I::KvT, I::kVec>, grid, kThreads, 0, stream, k, v,
               slot_mapping, arena, layer);
  });
}

void launch_copy_pages(const KvArena& arena, const int32_t* src_pages, const int32_t* dst_pages,
                       int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int64_t page_bytes = arena.layer_page_elems() * static_cast<int64_t>(dtype_size(arena.dtype));
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(arena.num_layers));
  if (page_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(arena.data) % 16 == 0) {
    copy_pages_kernel<uint4><<<grid, kThreads, 0, stream>>>(arena, src_pages, dst_pages,
                                                            page_bytes / 16);
  } else {
    SIEVE_CHECK_EQ(page_bytes % 4, 0);
    copy_pages_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(arena, src_pages, dst_pages,
                                                               page_bytes / 4);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

void launch_compact_kv(const KvArena& arena, const int32_t* page_table, int64_t capacity,
                       const int32_t* keep_slots, int64_t max_keep, const int32_t* keep_counts,
                       cudaStream_t stream) {
  const int64_t row_bytes = static_cast<int64_t>(arena.head_dim) * dtype_size(arena.dtype);
  SIEVE_CHECK_EQ(row_bytes % 4, 0);
  const int row_units = static_cast<int>(row_bytes / 4);
  const dim3 grid(static_cast<unsigned>(arena.num_kv_heads), static_cast<unsigned>(arena.num_layers),
                  2);
  const size_t smem = static_cast<size_t>(kCompactRows) * row_bytes;
  SIEVE_CHECK_LE(smem, 48u * 1024u);
  compact_kv_kernel<<<grid, kThreads, smem, stream>>>(arena, page_table, capacity, keep_slots,
                                                      max_keep, keep_counts, row_units,
                                                      static_cast<int>(dtype_size(arena.dtype)));
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
