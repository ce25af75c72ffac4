// KV cache kernels: writes (templated on the arena's element type; quantized formats are encoded
// by kv_quant.cuh), and the byte moves of page copies and compaction, which serve every format.

#include <cstdio>

#include "core/check.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/kv_quant.cuh"
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
                    TokenFormats formats, int layer) {
  wait_for_prior_kernels();
  allow_next_kernel();
  const int64_t t = blockIdx.x;
  write_kv_heads<KvT, kVec>(k, v, t, 0, a.num_kv_heads, slot_mapping[t], a, formats, layer);
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
  Unit* base =
      static_cast<Unit*>(a.data) + static_cast<int64_t>(layer) * a.num_pages * units_per_page;
  const Unit* from = base + src * units_per_page;
  Unit* to = base + dst * units_per_page;
  for (int64_t u = threadIdx.x; u < units_per_page; u += kThreads) to[u] = from[u];
}

// One block per (kv_head, layer, K or V), in rounds of kCompactRows destinations: the block reads
// every source row of the round into shared memory, then writes them. Since keep[j] >= j ascends,
// a later round's sources lie past every earlier round's destinations, so nothing is read after
// it was overwritten: the same result as moving the rows one by one in order. A launch moves one
// plane of the format's page layout: the element rows, or (`meta`) the scale rows, `row_units`
// Units each.
template <typename Unit>
__global__ void __launch_bounds__(kThreads)
    compact_kv_kernel(KvArena a, KvPageGeometry g, bool meta, const int32_t* page_table,
                      int64_t capacity, const int32_t* keep_slots, int64_t max_keep,
                      const int32_t* keep_counts, int row_units) {
  extern __shared__ uint32_t rows_raw[];
  Unit* rows_s = reinterpret_cast<Unit*>(rows_raw);
  const int head = blockIdx.x, layer = blockIdx.y, kv = blockIdx.z;
  const int64_t list = static_cast<int64_t>(layer) * a.num_kv_heads + head;
  const int count = keep_counts[list];
  const int32_t* keep = keep_slots + list * max_keep;
  unsigned char* arena = static_cast<unsigned char*>(a.data);
  auto row_of = [&](int64_t slot) {
    const int64_t page = page_table[slot / g.tokens_per_page];
    const int offset = static_cast<int>(slot % g.tokens_per_page);
    return reinterpret_cast<Unit*>(arena + (meta ? g.meta(a, layer, page, kv, head, offset)
                                                 : g.data(a, layer, page, kv, head, offset)));
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
                     const KvArena& arena, const TokenFormats& formats, int layer,
                     cudaStream_t stream) {
  const int64_t tokens = k.sizes[0];
  if (tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(tokens));
  dispatch_kv_write(k, v, arena, [&](auto instance) {
    using I = decltype(instance);
    launch_pdl(write_kv_kernel<typename I::KvT, I::kVec>, grid, kThreads, 0, stream, k, v,
               slot_mapping, arena, formats, layer);
  });
}

void launch_copy_pages(const KvArena& arena, const int32_t* src_pages, const int32_t* dst_pages,
                       int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int64_t page_bytes = arena.page_bytes;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(arena.num_layers));
  if (page_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(arena.data) % 16 == 0) {
    copy_pages_kernel<uint4>
        <<<grid, kThreads, 0, stream>>>(arena, src_pages, dst_pages, page_bytes / 16);
  } else if (page_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(arena.data) % 4 == 0) {
    copy_pages_kernel<uint32_t>
        <<<grid, kThreads, 0, stream>>>(arena, src_pages, dst_pages, page_bytes / 4);
  } else {
    copy_pages_kernel<uint8_t>
        <<<grid, kThreads, 0, stream>>>(arena, src_pages, dst_pages, page_bytes);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

void launch_compact_kv(const KvArena& arena, const int32_t* page_table, int64_t capacity,
                       const int32_t* keep_slots, int64_t max_keep, const int32_t* keep_counts,
                       cudaStream_t stream) {
  const KvPageGeometry g = arena_geometry(arena);
  const dim3 grid(static_cast<unsigned>(arena.num_kv_heads),
                  static_cast<unsigned>(arena.num_layers), 2);
  // Each plane in the widest units its rows and pages allow.
  for (const bool meta : {false, true}) {
    const int row_bytes = meta ? g.meta_bytes : g.data_bytes;
    if (row_bytes == 0) continue;
    const size_t smem = static_cast<size_t>(kCompactRows) * row_bytes;
    SIEVE_CHECK_LE(smem, 48u * 1024u);
    const bool words = row_bytes % 4 == 0 && arena.page_bytes % 4 == 0 &&
                       (!meta || g.meta_plane % 4 == 0) &&
                       reinterpret_cast<uintptr_t>(arena.data) % 4 == 0;
    if (words) {
      compact_kv_kernel<uint32_t><<<grid, kThreads, smem, stream>>>(
          arena, g, meta, page_table, capacity, keep_slots, max_keep, keep_counts, row_bytes / 4);
    } else {
      compact_kv_kernel<uint8_t><<<grid, kThreads, smem, stream>>>(
          arena, g, meta, page_table, capacity, keep_slots, max_keep, keep_counts, row_bytes);
    }
    SIEVE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace sieve::kernels::cuda
