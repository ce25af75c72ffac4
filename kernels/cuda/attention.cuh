#pragma once
// The paged attention kernel template, instantiated per (KV element type, head_dim, rows per
// warp, hooks) in kernels/cuda/instances/. Included by attention.cu and the instance files only.
//
// Slots are indexed "virtually": a compacted head's valid slots [0, prefix) and [gap, kv_len)
// are numbered 0, 1, ... without the dead gap (physical = v < prefix ? v : gap + v - prefix), and a
// row's causal limit is counted the same way, so the kernel never sees the gap except when it
// computes an address. Without compaction prefix = gap = kv_len and the map is the identity.
//
// Work decomposition. Per sequence, the query rows of one KV head (its q_len tokens times the
// group's query heads, token-major) are packed into chunks of kRows rows; each chunk may be split
// along the context into pieces of split_len slots (flash-decoding). A work item is (sequence,
// chunk, split), and grid.y is the KV head, so every K/V tile is loaded once for all the query
// heads of its group. The plan kernel (attention.cu) lays the items out on the device, from the
// device's own lengths, so the launch needs no host copy of the batch.
//
// Inside a block, K and V tiles of 32 slots stream through shared memory (cp.async, two stages).
// Each warp owns kRowsPerWarp query rows: lane j scores slot j of the tile (q read as a broadcast
// from shared memory, K as 16-byte vectors from padded rows, conflict-free), the row's running
// max and sum are updated (online softmax in base 2, q pre-scaled by scale·log2 e), and every
// lane accumulates its own dimensions of P·V from shuffled probabilities.
//
// Hooks (AttentionArgs: per-slot logit bias, selected slots) are one compile-time flag, kHooks,
// for both: the two come from the same policies, each costs little once the other is paid for,
// and one flag keeps the instance count (and CI's build) modest; instances without it compile
// to the same code as before the hooks existed. With kHooks a (sequence, KV head) with a
// selection iterates over positions in its list instead of virtual slots (position i reads
// virtual slot selected[i]; a row's causal limit becomes the number of entries below it), so
// tiles, splits and masks are unchanged; the bias of each tile's slots is copied beside K and V
// and added to the scores (in base 2). Hooks instances exist for bf16 K/V only, with one row per
// warp in the FMA kernel.

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace sieve::kernels::cuda::attention_impl {

// The quantized KV formats' instance type (fp8_e4m3, int8, int4: Launch::format says which, one a
// launch). Their K/V tiles are dequantized into shared memory as f32 (Tile<KvQuant>): q · s is
// exact in f32, so the kernel scores the CPU reference's values, and the compute loop is the f32
// instance's.
struct KvQuant {};
template <typename KvT>
struct TileOf {
  using type = KvT;
};
template <>
struct TileOf<KvQuant> {
  using type = float;
};
template <typename KvT>
using Tile = typename TileOf<KvT>::type;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 32;         // KV slots per shared-memory tile
constexpr int kMaxHeadDim = 256;  // the generic (kHeadDim = 0) instance's bound
// Packed query rows per block of the tensor-core kernel (attention_tc_kernel.cuh): sequences with
// at least this many packed rows in a step (prefill chunks) go to it, the others to the FMA kernel.
constexpr int kTcRows = 64;
constexpr float kLog2e = 1.4426950408889634f;

// The device plan written by the plan kernel into the workspace.
struct Plan {
  int32_t split_len;   // slots per split; INT32_MAX when nothing is split
  int32_t split_mode;  // 1: blocks write partials and the combine kernel writes `out`
  int32_t num_items;
  int32_t unused;
};

// Arguments of the main and combine kernels (plain values: passed by value to the kernels).
struct Launch {
  const bf16* q;
  int64_t q_stride_token, q_stride_head;
  bf16* out;
  int64_t out_stride_token, out_stride_head;
  const void* arena;
  int64_t layer_page_elems;  // elements of one layer's copy of a page (K and V); bytes: KvQuant
  int num_layers, num_kv_heads, head_dim, tokens_per_page, num_pages, layer;
  // Formats (kv_cache.h's kKv* ids). A launch of an instance reads the sequences of `format`
  // (tokens_per_page and layer_page_elems are that format's) and its blocks of other sequences
  // exit at once; kv_formats null: every sequence is of `format`. The plan kernel reads `format`
  // as the layout's.
  int32_t format;
  const int32_t* kv_formats;  // [num_seqs] or null
  int64_t meta_plane;         // KvQuant: byte offset of the scale plane in a layer's page
  int group;                  // query heads per KV head
  int num_seqs;
  const int32_t* qo_indptr;
  const int32_t* kv_indptr;
  const int32_t* kv_indices;
  const int32_t* kv_lens;
  const int32_t* kv_head_lens;
  const int32_t* kv_gap_ends;
  // The sequences this launch takes: q_len · group in [min_packed_rows, max_packed_rows).
  int min_packed_rows, max_packed_rows;
  float scale_log2;  // softmax scale times log2(e)
  const Plan* plan;
  const int32_t* item_offset;  // [num_seqs + 1]
  const int32_t* splits;       // [num_seqs]
  float* partial_o;            // [items * num_kv_heads * rows, head_dim]
  float2* partial_ml;          // (running max in base 2, sum) per partial row
  // The hooks, read by kHooks instances only (and the plan kernel); null when absent.
  const float* slot_bias;          // [num_layers, num_pages, num_kv_heads, tokens_per_page]
  const int32_t* slot_bias_seqs;   // [num_seqs]; null: every sequence reads slot_bias
  const int32_t* selected_indptr;  // [num_seqs * num_kv_heads + 1]
  const int32_t* selected_slots;
};

// Valid slots of a head below the physical limit `limit` (exclusive): [0, prefix) and [gap, limit).
__host__ __device__ __forceinline__ int virtual_limit(int limit, int prefix, int gap) {
  return (limit < prefix ? limit : prefix) + (limit > gap ? limit - gap : 0);
}

// Shared memory of one block: q rows (f32) plus two stages of K and V tiles (and, with the
// hooks, two stages of the tile's slot biases).
template <typename KvT>
constexpr int padded_row(int head_dim) {
  return head_dim + 16 / static_cast<int>(sizeof(KvT));
}
template <typename KvT>
size_t smem_bytes(int rows, int head_dim, bool hooks) {
  using T = Tile<KvT>;
  return static_cast<size_t>(rows) * head_dim * sizeof(float) +
         4ull * kTile * padded_row<T>(head_dim) * sizeof(T) +
         (hooks ? 2ull * kTile * sizeof(float) : 0);
}

// Launches the main kernel for one instance; defined in attention_kernel.cuh's instances.
template <typename KvT, int kHeadDim, int kRowsPerWarp, bool kHooks>
void run_attention_kernel(const Launch& launch, int grid_items, cudaStream_t stream);
// The quantized formats' decode kernel (kFormat fp8_e4m3, int8 or int4; head_dim 64/128; blocks
// of kWarps packed rows); defined in attention_quant_kernel.cuh's instances.
template <int kFormat, int kHeadDim>
void run_quant_decode_kernel(const Launch& launch, int grid_items, cudaStream_t stream);
// The tensor-core kernel (KvT bf16, or KvQuant dequantized into bf16 tiles); defined in
// attention_tc_kernel.cuh's instances.
template <int kHeadDim, bool kHooks, typename KvT = bf16>
void run_tc_attention_kernel(const Launch& launch, int grid_items, cudaStream_t stream);

}  // namespace sieve::kernels::cuda::attention_impl
