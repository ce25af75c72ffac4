// Paged attention: the plan kernel (work items and split length from the device's own lengths),
// the combine kernel of split-K, and the launcher that picks the instance. The main kernel is in
// attention_kernel.cuh, instantiated under instances/.
//
// Split choice. With base = Σ_s chunks_s work items per KV head, a batch that already gives
// base · num_kv_heads >= B · num_sms blocks is not split. Otherwise the context is cut into
// pieces of split_len = max(64, ⌈W / target⌉, ⌈max_s len_s / 32⌉) slots (rounded up to the
// tile), where W = Σ_s chunks_s · len_s and target = ⌈B · num_sms / num_kv_heads⌉, so the items
// number at most base + target < 2 · target: the partial buffer's size is known before the
// launch. B is
// the blocks an SM holds at once: 6 for the FMA decode kernel (shared memory is its limit; its
// blocks are memory-bound and each keeps only two tiles in flight, so it wants a full wave),
// 2 for the tensor-core kernel. Measured on the H100 (bench/results/gpu-2026-11-24-s3/
// split_mult.txt): B = 6 rather than 2 takes a 16-sequence step of 4k contexts from 14.6 to 11.1
// ms and a 64-sequence one from 23.0 to 17.3. The cap of 32 splits a sequence keeps batch 1 at 4k
// from paying for more partials than it needs (6.33 ms a step at 33 splits, 6.63 at 65), while
// short contexts keep 64-slot splits (a 512-token context in 8, not 4: 5.8 against 6.1 ms). A
// selection counts as its length: len_s is the most slots any KV head of the sequence reads.
//
// Programmatic dependent launch (launch.cuh): the attention kernels let the next kernel launch
// early (the O projection's GEMV then starts streaming its weights during the combine), but are
// themselves launched plainly. Launched with PDL they made a 16-sequence decode step 9-13% slower
// (8.8 -> 9.7 ms at 1k contexts, 15.2 -> 17.0 ms at 4k) for 0.4% at batch 1
// (bench/results/gpu-2026-11-24-s3/pdl_modes.txt). Their wait_for_prior_kernels() calls are then
// no-ops, kept so that the kernels stay correct under either launch.

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cub/block/block_scan.cuh>
#include <string_view>

#include "core/check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/kv_quant.cuh"
#include "kernels/cuda/quant_attention.h"

namespace sieve::kernels::cuda {

namespace attention_impl {
// The instances (kernels/cuda/instances/*.cu).
#define SIEVE_ATTENTION_EXTERN(KvT, kHeadDim, kRowsPerWarp, kHooks)               \
  extern template void run_attention_kernel<KvT, kHeadDim, kRowsPerWarp, kHooks>( \
      const Launch&, int, cudaStream_t)
SIEVE_ATTENTION_EXTERN(bf16, 64, 1, false);
SIEVE_ATTENTION_EXTERN(bf16, 64, 4, false);
SIEVE_ATTENTION_EXTERN(bf16, 128, 1, false);
SIEVE_ATTENTION_EXTERN(bf16, 128, 4, false);
SIEVE_ATTENTION_EXTERN(bf16, 0, 1, false);
SIEVE_ATTENTION_EXTERN(bf16, 0, 4, false);
SIEVE_ATTENTION_EXTERN(float, 64, 1, false);
SIEVE_ATTENTION_EXTERN(float, 64, 4, false);
SIEVE_ATTENTION_EXTERN(float, 128, 1, false);
SIEVE_ATTENTION_EXTERN(float, 128, 4, false);
SIEVE_ATTENTION_EXTERN(float, 0, 1, false);
SIEVE_ATTENTION_EXTERN(float, 0, 4, false);
SIEVE_ATTENTION_EXTERN(bf16, 64, 1, true);
SIEVE_ATTENTION_EXTERN(bf16, 128, 1, true);
SIEVE_ATTENTION_EXTERN(bf16, 0, 1, true);
SIEVE_ATTENTION_EXTERN(KvQuant, 64, 1, false);
SIEVE_ATTENTION_EXTERN(KvQuant, 64, 4, false);
SIEVE_ATTENTION_EXTERN(KvQuant, 128, 1, false);
SIEVE_ATTENTION_EXTERN(KvQuant, 128, 4, false);
SIEVE_ATTENTION_EXTERN(KvQuant, 0, 1, false);
SIEVE_ATTENTION_EXTERN(KvQuant, 0, 4, false);
#undef SIEVE_ATTENTION_EXTERN
extern template void run_tc_attention_kernel<64, false>(const Launch&, int, cudaStream_t);
extern template void run_tc_attention_kernel<128, false>(const Launch&, int, cudaStream_t);
extern template void run_tc_attention_kernel<64, true>(const Launch&, int, cudaStream_t);
extern template void run_tc_attention_kernel<128, true>(const Launch&, int, cudaStream_t);
extern template void run_tc_attention_kernel<64, false, KvQuant>(const Launch&, int, cudaStream_t);
extern template void run_tc_attention_kernel<128, false, KvQuant>(const Launch&, int, cudaStream_t);
#define SIEVE_QUANT_DECODE_EXTERN(kFormat, kHeadDim) \
  extern template void run_quant_decode_kernel<kFormat, kHeadDim>(const Launch&, int, cudaStream_t)
SIEVE_QUANT_DECODE_EXTERN(kKvFp8E4M3, 64);
SIEVE_QUANT_DECODE_EXTERN(kKvInt8, 64);
SIEVE_QUANT_DECODE_EXTERN(kKvInt4, 64);
SIEVE_QUANT_DECODE_EXTERN(kKvFp8E4M3, 128);
SIEVE_QUANT_DECODE_EXTERN(kKvInt8, 128);
SIEVE_QUANT_DECODE_EXTERN(kKvInt4, 128);
#undef SIEVE_QUANT_DECODE_EXTERN
}  // namespace attention_impl

namespace {

using attention_impl::kThreads;
using attention_impl::kTile;
using attention_impl::Launch;
using attention_impl::Plan;

constexpr int kPlanThreads = 256;
constexpr int kMinSplitLen = 64;
constexpr int kMaxSplits = 32;     // per sequence
constexpr int kFmaWaveBlocks = 6;  // B of the file comment, per launch class
constexpr int kTcWaveBlocks = 2;
constexpr int kCombineRowsPerBlock = 4;

// Rows per warp of the FMA kernel: 1 keeps decode blocks small (a GQA group of 4 fills the 4
// warps); 4 reuses each K/V tile for 16 query rows in prefill when no tensor-core kernel takes it.
int rows_per_warp(const PagedAttentionParams& p, bool tensor_cores) {
  if (tensor_cores) return 1;
  const int64_t group = p.num_heads / p.num_kv_heads;
  return static_cast<int64_t>(p.num_tokens) * group >= 16ll * std::max(p.num_seqs, 1) ? 4 : 1;
}

int target_per_head(int num_sms, int num_kv_heads, int wave_blocks) {
  return (wave_blocks * num_sms + num_kv_heads - 1) / num_kv_heads;
}

// Workspace of one launch class: Plan, item_offset[num_seqs + 1], splits[num_seqs], then
// (256-aligned) the partial outputs and their (max, sum) pairs for blocks of `rows` rows.
struct WorkspaceLayout {
  size_t item_offset, splits, partial_o, partial_ml, total;
};

WorkspaceLayout workspace_layout(int num_seqs, int num_kv_heads, int head_dim, int rows,
                                 int target) {
  auto align = [](size_t x) { return (x + 255) / 256 * 256; };
  WorkspaceLayout w{};
  w.item_offset = sizeof(Plan);
  w.splits = w.item_offset + sizeof(int32_t) * (num_seqs + 1);
  const size_t partial_rows = 2ull * target * num_kv_heads * rows;
  w.partial_o = align(w.splits + sizeof(int32_t) * num_seqs);
  w.partial_ml = align(w.partial_o + partial_rows * head_dim * sizeof(float));
  w.total = align(w.partial_ml + partial_rows * sizeof(float2));
  return w;
}

// The FMA class's layout (its largest rows) followed by the tensor-core class's.
WorkspaceLayout fma_layout(const PagedAttentionParams& p, int num_sms) {
  return workspace_layout(p.num_seqs, p.num_kv_heads, p.head_dim, attention_impl::kWarps * 4,
                          target_per_head(num_sms, p.num_kv_heads, kFmaWaveBlocks));
}
WorkspaceLayout tc_layout(const PagedAttentionParams& p, int num_sms) {
  return workspace_layout(p.num_seqs, p.num_kv_heads, p.head_dim, attention_impl::kTcRows,
                          target_per_head(num_sms, p.num_kv_heads, kTcWaveBlocks));
}

// One block: per-sequence chunks and lengths, the split decision, and the item prefix sums.
__global__ void __launch_bounds__(kPlanThreads)
    attention_plan_kernel(Launch p, int rows, int target, Plan* plan, int32_t* item_offset,
                          int32_t* splits) {
  using Scan = cub::BlockScan<int32_t, kPlanThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ unsigned long long base_sum, work_sum;
  __shared__ int split_len, any_split, carry, max_len;
  wait_for_prior_kernels();
  allow_next_kernel();
  if (threadIdx.x == 0) {
    base_sum = work_sum = 0;
    any_split = 0;
    max_len = 0;
    carry = 0;
  }
  __syncthreads();
  // Pass 1: chunks_s (kept in item_offset[s]) and the planned length (kept in splits[s]): the
  // most valid (virtual) slots, or selected slots, of the sequence's KV heads in this layer.
  for (int s = threadIdx.x; s < p.num_seqs; s += kPlanThreads) {
    const int packed_rows = (p.qo_indptr[s + 1] - p.qo_indptr[s]) * p.group;
    const bool mine = packed_rows >= p.min_packed_rows && packed_rows < p.max_packed_rows;
    const int chunks = mine ? (packed_rows + rows - 1) / rows : 0;
    int len = p.kv_lens[s];
    if (p.kv_head_lens || p.selected_indptr) {
      const int physical = len;
      len = 0;
      for (int h = 0; h < p.num_kv_heads; ++h) {
        int head_len = physical;
        if (p.kv_head_lens) {
          const int prefix =
              p.kv_head_lens[(static_cast<int64_t>(s) * p.num_layers + p.layer) * p.num_kv_heads +
                             h];
          head_len = attention_impl::virtual_limit(physical, prefix, p.kv_gap_ends[s]);
        }
        if (p.selected_indptr) {
          const int64_t list = static_cast<int64_t>(s) * p.num_kv_heads + h;
          const int selected = p.selected_indptr[list + 1] - p.selected_indptr[list];
          if (selected > 0) head_len = min(head_len, selected);
        }
        len = max(len, head_len);
      }
    }
    len = max(len, 0);
    item_offset[s] = chunks;
    splits[s] = len;
    atomicAdd(&base_sum, static_cast<unsigned long long>(chunks));
    atomicAdd(&work_sum, static_cast<unsigned long long>(chunks) * len);
    if (chunks > 0) atomicMax(&max_len, len);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (base_sum >= static_cast<unsigned long long>(target)) {
      split_len = INT_MAX;
    } else {
      const unsigned long long len =
          max(max(static_cast<unsigned long long>(kMinSplitLen), (work_sum + target - 1) / target),
              static_cast<unsigned long long>((max_len + kMaxSplits - 1) / kMaxSplits));
      split_len = static_cast<int>(
          min((len + kTile - 1) / kTile * kTile, static_cast<unsigned long long>(INT_MAX / 2)));
    }
  }
  __syncthreads();
  // Pass 2: splits and items per sequence, then the exclusive scan of items, kPlanThreads
  // sequences at a time.
  for (int begin = 0; begin < p.num_seqs; begin += kPlanThreads) {
    const int s = begin + threadIdx.x;
    int items = 0;
    if (s < p.num_seqs) {
      const int len = splits[s];
      const int n = split_len == INT_MAX ? 1 : max(1, (len + split_len - 1) / split_len);
      if (n > 1) any_split = 1;
      splits[s] = n;
      items = item_offset[s] * n;
    }
    int offset = 0, total = 0;
    Scan(scan_storage).ExclusiveSum(items, offset, total);
    if (s < p.num_seqs) item_offset[s] = carry + offset;
    __syncthreads();
    if (threadIdx.x == 0) carry += total;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    item_offset[p.num_seqs] = carry;
    *plan = Plan{split_len, any_split, carry, 0};
  }
}

// One warp per (token, query head): merges the partials of its splits,
//   O = Σ_i o_i 2^(m_i - M) / Σ_i l_i 2^(m_i - M),  M = max_i m_i.
__global__ void __launch_bounds__(32 * kCombineRowsPerBlock)
    attention_combine_kernel(Launch p, int rows, int num_heads, int num_tokens) {
  wait_for_prior_kernels();
  allow_next_kernel();
  if (!p.plan->split_mode) return;
  const int lane = threadIdx.x % 32;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * kCombineRowsPerBlock + threadIdx.x / 32;
  if (index >= static_cast<int64_t>(num_tokens) * num_heads) return;
  const int token = static_cast<int>(index / num_heads), head = static_cast<int>(index % num_heads);
  int lo = 0, hi = p.num_seqs - 1;  // the sequence owning `token`
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.qo_indptr[mid] <= token) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int s = lo;
  // Padding tokens past the last sequence, and sequences of the other launch class.
  if (token >= p.qo_indptr[p.num_seqs] || p.item_offset[s + 1] == p.item_offset[s]) return;
  const int kv_head = head / p.group;
  const int packed = (token - p.qo_indptr[s]) * p.group + head % p.group;
  const int splits = p.splits[s];
  const int64_t first_item = p.item_offset[s] + static_cast<int64_t>(packed / rows) * splits;
  const int row = packed % rows;
  auto partial = [&](int split) {
    return ((first_item + split) * p.num_kv_heads + kv_head) * rows + row;
  };
  // Lanes read the splits' (max, sum) in parallel; each lane then owns 4 dimensions per pass and
  // adds the splits' partial rows, their weights passed round by shuffles (independent loads).
  float max = -INFINITY;
  for (int i = lane; i < splits; i += 32) max = fmaxf(max, p.partial_ml[partial(i)].x);
  max = warp_max(max);
  float sum = 0.0f;
  for (int i = lane; i < splits; i += 32) {
    const float2 ml = p.partial_ml[partial(i)];
    if (ml.x != -INFINITY) sum += ml.y * exp2f(ml.x - max);
  }
  sum = warp_sum(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  bf16* dst = p.out + token * p.out_stride_token + head * p.out_stride_head;
  for (int pass = 0; pass < p.head_dim; pass += 128) {  // warp-uniform: every lane shuffles
    const int d = pass + 4 * lane;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int base = 0; base < splits; base += 32) {
      float weight = 0.0f;  // split base + lane's
      if (base + lane < splits) {
        const float2 ml = p.partial_ml[partial(base + lane)];
        if (ml.x != -INFINITY) weight = exp2f(ml.x - max);
      }
      const int n = min(32, splits - base);
#pragma unroll 4
      for (int j = 0; j < n; ++j) {
        const float w = __shfl_sync(0xffffffffu, weight, j);
        if (d < p.head_dim) {
          const float4 o =
              *reinterpret_cast<const float4*>(p.partial_o + partial(base + j) * p.head_dim + d);
          acc.x += o.x * w;
          acc.y += o.y * w;
          acc.z += o.z * w;
          acc.w += o.w * w;
        }
      }
    }
    if (d < p.head_dim) {
      dst[d] = __float2bfloat16_rn(acc.x * inv);
      dst[d + 1] = __float2bfloat16_rn(acc.y * inv);
      dst[d + 2] = __float2bfloat16_rn(acc.z * inv);
      dst[d + 3] = __float2bfloat16_rn(acc.w * inv);
    }
  }
}

template <typename KvT>
void run_instance(const Launch& launch, int rows_per_warp, int grid_items, cudaStream_t stream) {
  using attention_impl::run_attention_kernel;
  const bool four = rows_per_warp == 4;
  switch (launch.head_dim) {
    case 64:
      four ? run_attention_kernel<KvT, 64, 4, false>(launch, grid_items, stream)
           : run_attention_kernel<KvT, 64, 1, false>(launch, grid_items, stream);
      break;
    case 128:
      four ? run_attention_kernel<KvT, 128, 4, false>(launch, grid_items, stream)
           : run_attention_kernel<KvT, 128, 1, false>(launch, grid_items, stream);
      break;
    default:
      four ? run_attention_kernel<KvT, 0, 4, false>(launch, grid_items, stream)
           : run_attention_kernel<KvT, 0, 1, false>(launch, grid_items, stream);
      break;
  }
}

// The FMA kernel with the hooks: bf16 K/V, one row per warp (instances/generate.py says why).
void run_hooks_instance(const Launch& launch, int grid_items, cudaStream_t stream) {
  using attention_impl::run_attention_kernel;
  switch (launch.head_dim) {
    case 64:
      run_attention_kernel<bf16, 64, 1, true>(launch, grid_items, stream);
      break;
    case 128:
      run_attention_kernel<bf16, 128, 1, true>(launch, grid_items, stream);
      break;
    default:
      run_attention_kernel<bf16, 0, 1, true>(launch, grid_items, stream);
      break;
  }
}

bool has_hooks(const Launch& launch) { return launch.slot_bias || launch.selected_indptr; }

// Whether SIEVE_QUANT_ATTENTION=legacy asks for the KvQuant instances on decode launches too
// (read once; kept for A/B measurements of the decode kernel).
bool legacy_quant_decode() {
  static const bool legacy = [] {
    const char* v = std::getenv("SIEVE_QUANT_ATTENTION");
    return v && std::string_view(v) == "legacy";
  }();
  return legacy;
}

template <int kHeadDim>
void run_quant_decode(const Launch& launch, int grid_items, cudaStream_t stream) {
  using attention_impl::run_quant_decode_kernel;
  switch (launch.format) {
    case kKvFp8E4M3:
      run_quant_decode_kernel<kKvFp8E4M3, kHeadDim>(launch, grid_items, stream);
      break;
    case kKvInt8:
      run_quant_decode_kernel<kKvInt8, kHeadDim>(launch, grid_items, stream);
      break;
    default:
      run_quant_decode_kernel<kKvInt4, kHeadDim>(launch, grid_items, stream);
      break;
  }
}

// The quantized formats: decode launches (one row a warp, so a block holds 4 packed rows) of
// head_dim 64 or 128 over 16-byte aligned pages take the decode kernel of their format
// (attention_quant_kernel.cuh: raw tiles by cp.async, dequantized in registers); the others the
// FMA instances (KvQuant: the format is the launch's, read at run time).
void run_quant_instance(const Launch& launch, int rows_per_warp, int grid_items,
                        cudaStream_t stream) {
  const bool aligned =
      reinterpret_cast<uintptr_t>(launch.arena) % 16 == 0 && launch.layer_page_elems % 16 == 0;
  if (rows_per_warp == 1 && aligned && !legacy_quant_decode()) {
    if (launch.head_dim == 128) {
      run_quant_decode<128>(launch, grid_items, stream);
      return;
    }
    if (launch.head_dim == 64) {
      run_quant_decode<64>(launch, grid_items, stream);
      return;
    }
  }
  run_instance<attention_impl::KvQuant>(launch, rows_per_warp, grid_items, stream);
}

// `launch` set to read the sequences of `format`: its tokens per page and page addressing.
Launch for_format(Launch launch, const PagedAttentionParams& params, int format) {
  KvArena a;
  a.num_kv_heads = params.num_kv_heads;
  a.head_dim = params.head_dim;
  a.page_bytes = params.page_bytes;
  const KvPageGeometry g = kv_geometry(a, format);
  launch.format = format;
  launch.tokens_per_page = g.tokens_per_page;
  launch.layer_page_elems = params.page_bytes / (format == kKvF32 ? 4 : format == kKvBF16 ? 2 : 1);
  launch.meta_plane = g.meta_plane;
  return launch;
}

}  // namespace

const char* quant_decode_attention_path() {
  return legacy_quant_decode() ? "legacy (f32 tiles)" : "register dequant (raw tiles, cp.async)";
}

bool attention_supports(int head_dim, DType kv_dtype) {
  return head_dim > 0 && head_dim % 8 == 0 && head_dim <= attention_impl::kMaxHeadDim &&
         (kv_dtype == DType::kBF16 || kv_dtype == DType::kF32 || kv_dtype == DType::kU8);
}

size_t attention_workspace_bytes(const PagedAttentionParams& params, int num_sms) {
  return fma_layout(params, num_sms).total + tc_layout(params, num_sms).total;
}

bool attention_uses_tensor_cores(const PagedAttentionParams& p) {
  auto aligned = [](const void* ptr, int64_t stride_token, int64_t stride_head) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && stride_token % 8 == 0 &&
           stride_head % 8 == 0;
  };
  // bf16 and quantized layouts (a quantized tile is dequantized into bf16); not f32 ones.
  return p.tensor_cores && (p.kv_dtype == DType::kBF16 || p.kv_dtype == DType::kU8) &&
         (p.head_dim == 64 || p.head_dim == 128) &&
         aligned(p.q, p.q_stride_token, p.q_stride_head) &&
         aligned(p.out, p.out_stride_token, p.out_stride_head);
}

namespace {

// Plans and runs one launch class (the sequences whose packed rows fall in [lo, hi)) with its
// part of the workspace: the plan, the main kernel, and the combine of split-K partials.
void run_class(Launch launch, const PagedAttentionParams& params, int lo, int hi, int rows,
               bool tensor_cores, char* base, const WorkspaceLayout& w, int num_sms,
               cudaStream_t stream) {
  launch.min_packed_rows = lo;
  launch.max_packed_rows = hi;
  launch.plan = reinterpret_cast<const Plan*>(base);
  launch.item_offset = reinterpret_cast<const int32_t*>(base + w.item_offset);
  launch.splits = reinterpret_cast<const int32_t*>(base + w.splits);
  launch.partial_o = reinterpret_cast<float*>(base + w.partial_o);
  launch.partial_ml = reinterpret_cast<float2*>(base + w.partial_ml);
  const int target =
      target_per_head(num_sms, params.num_kv_heads, tensor_cores ? kTcWaveBlocks : kFmaWaveBlocks);
  if (!params.reuse_plan) {
    attention_plan_kernel<<<1, kPlanThreads, 0, stream>>>(
        launch, rows, target, reinterpret_cast<Plan*>(base),
        reinterpret_cast<int32_t*>(base + w.item_offset),
        reinterpret_cast<int32_t*>(base + w.splits));
    SIEVE_CUDA_CHECK_LAUNCH();
  }

  // Items never exceed base + target (see the file comment); base <= ⌈rows_total / rows⌉ + seqs.
  const int64_t packed_rows = static_cast<int64_t>(params.num_tokens) * launch.group;
  const int64_t grid_items = (packed_rows + rows - 1) / rows + params.num_seqs + target;
  SIEVE_CHECK_LE(grid_items, INT_MAX);
  const bool hooks = has_hooks(launch);
  const int items = static_cast<int>(grid_items);
  // One instance per format the batch may hold (a format per sequence: kv_formats), each
  // launch's blocks of other formats' sequences exiting at once. Formats are instances rather
  // than a branch inside one kernel so that the bf16 kernels keep their registers, their cp.async
  // pipelines and their speed; only batches that mix formats (never the decode graphs) pay for
  // the extra launches. f32 sequences exist in an f32 layout only (CPU-reference tests), which
  // takes no tensor cores.
  const int rows_per_warp = rows / attention_impl::kWarps;
  auto run_format = [&](int format) {
    const Launch l = params.kv_formats ? for_format(launch, params, format) : launch;
    if (tensor_cores) {
      using attention_impl::KvQuant;
      using attention_impl::run_tc_attention_kernel;
      const bool quantized = kv_quantized(format);
      if (params.head_dim == 64) {
        quantized ? run_tc_attention_kernel<64, false, KvQuant>(l, items, stream)
        : hooks   ? run_tc_attention_kernel<64, true>(l, items, stream)
                  : run_tc_attention_kernel<64, false>(l, items, stream);
      } else {
        quantized ? run_tc_attention_kernel<128, false, KvQuant>(l, items, stream)
        : hooks   ? run_tc_attention_kernel<128, true>(l, items, stream)
                  : run_tc_attention_kernel<128, false>(l, items, stream);
      }
    } else if (kv_quantized(format)) {
      run_quant_instance(l, rows_per_warp, items, stream);
    } else if (hooks) {
      run_hooks_instance(l, items, stream);
    } else if (format == kKvBF16) {
      run_instance<bf16>(l, rows_per_warp, items, stream);
    } else {
      run_instance<float>(l, rows_per_warp, items, stream);
    }
  };
  if (!params.kv_formats) {
    run_format(params.kv_format);
  } else {
    const int unquantized = params.kv_format == kKvF32 ? kKvF32 : kKvBF16;
    for (const int format : {unquantized, kKvFp8E4M3, kKvInt8, kKvInt4}) run_format(format);
  }
  const int64_t out_rows = static_cast<int64_t>(params.num_tokens) * params.num_heads;
  attention_combine_kernel<<<static_cast<unsigned>((out_rows + kCombineRowsPerBlock - 1) /
                                                   kCombineRowsPerBlock),
                             32 * kCombineRowsPerBlock, 0, stream>>>(launch, rows, params.num_heads,
                                                                     params.num_tokens);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_attention(const PagedAttentionParams& params, void* workspace, int num_sms,
                      cudaStream_t stream) {
  SIEVE_CHECK(attention_supports(params.head_dim, params.kv_dtype))
      << "head_dim " << params.head_dim << ", KV dtype " << params.kv_dtype;
  SIEVE_CHECK(params.num_kv_heads > 0 && params.num_heads % params.num_kv_heads == 0)
      << params.num_heads << " query heads over " << params.num_kv_heads << " KV heads";
  SIEVE_CHECK_EQ(params.kv_head_lens == nullptr, params.kv_gap_ends == nullptr)
      << "kv_head_lens and kv_gap_ends come together";
  SIEVE_CHECK(params.slot_bias || !params.slot_bias_seqs) << "slot_bias_seqs without slot_bias";
  SIEVE_CHECK(params.selected_indptr || !params.selected_slots)
      << "selected_slots without selected_indptr";
  const bool hooks = params.slot_bias || params.selected_indptr;
  SIEVE_CHECK(!hooks || (params.kv_dtype == DType::kBF16 && !params.kv_formats))
      << "the attention hooks (slot bias, selected slots) need a bf16 KV cache on CUDA, got "
      << params.kv_dtype << (params.kv_formats ? " with per-sequence formats" : "");
  SIEVE_CHECK(params.page_bytes > 0 && params.page_bytes % 4 == 0)
      << "pages of " << params.page_bytes << " bytes a layer";
  if (params.num_tokens == 0 || params.num_seqs == 0) return;
  Launch launch{};
  launch.q = static_cast<const bf16*>(params.q);
  launch.q_stride_token = params.q_stride_token;
  launch.q_stride_head = params.q_stride_head;
  launch.out = static_cast<bf16*>(params.out);
  launch.out_stride_token = params.out_stride_token;
  launch.out_stride_head = params.out_stride_head;
  launch.arena = params.arena;
  launch.layer_page_elems = params.page_bytes / static_cast<int64_t>(dtype_size(params.kv_dtype));
  launch.format = params.kv_format;
  launch.kv_formats = params.kv_formats;
  launch.meta_plane = for_format(launch, params, params.kv_format).meta_plane;
  launch.num_layers = params.num_layers;
  launch.num_kv_heads = params.num_kv_heads;
  launch.head_dim = params.head_dim;
  launch.tokens_per_page = params.tokens_per_page;
  launch.num_pages = params.num_pages;
  launch.layer = params.layer;
  launch.group = params.num_heads / params.num_kv_heads;
  launch.num_seqs = params.num_seqs;
  launch.qo_indptr = params.qo_indptr;
  launch.kv_indptr = params.kv_indptr;
  launch.kv_indices = params.kv_indices;
  launch.kv_lens = params.kv_lens;
  launch.kv_head_lens = params.kv_head_lens;
  launch.kv_gap_ends = params.kv_gap_ends;
  launch.slot_bias = params.slot_bias;
  launch.slot_bias_seqs = params.slot_bias_seqs;
  launch.selected_indptr = params.selected_indptr;
  launch.selected_slots = params.selected_slots;
  launch.scale_log2 = params.scale * attention_impl::kLog2e;

  // Sequences with a tile's worth of packed rows go to the tensor-core kernel, the rest to the
  // FMA kernel; the host's bounds on q_len (0: unknown) skip a class no sequence is in.
  const bool tensor_cores = attention_uses_tensor_cores(params);
  const int split = tensor_cores ? attention_impl::kTcRows : INT_MAX;
  const int64_t group = launch.group;
  const bool fma_class = params.min_q_len <= 0 || params.min_q_len * group < split;
  const bool tc_class =
      tensor_cores && (params.max_q_len <= 0 || params.max_q_len * group >= split);
  char* base = static_cast<char*>(workspace);
  const WorkspaceLayout fma = fma_layout(params, num_sms);
  if (fma_class) {
    const int rows = attention_impl::kWarps * (hooks ? 1 : rows_per_warp(params, tensor_cores));
    run_class(launch, params, 0, split, rows, false, base, fma, num_sms, stream);
  }
  if (tc_class) {
    run_class(launch, params, split, INT_MAX, attention_impl::kTcRows, true, base + fma.total,
              tc_layout(params, num_sms), num_sms, stream);
  }
}

}  // namespace sieve::kernels::cuda
