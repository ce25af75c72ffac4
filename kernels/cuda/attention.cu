// Paged attention: the plan kernel (work items and split length from the device's own lengths),
// the combine kernel of split-K, and the launcher that picks the instance. The main kernel is in
// attention_kernel.cuh, instantiated under instances/.
//
// Split choice. With base = Σ_s chunks_s work items per KV head, a batch that already gives
// base · num_kv_heads >= 2 · num_sms blocks is not split. Otherwise the context is cut into
// pieces of split_len = max(256, ⌈W / target⌉) slots (rounded up to the tile), where
// W = Σ_s chunks_s · len_s and target = ⌈2 · num_sms / num_kv_heads⌉, so the items number at
// most base + target < 2 · target: the partial buffer's size is known before the launch.

#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <climits>

#include "core/check.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.h"

namespace sieve::kernels::cuda {

namespace attention_impl {
// The instances (kernels/cuda/instances/*.cu).
#define SIEVE_ATTENTION_EXTERN(KvT, kHeadDim, kRowsPerWarp)                                  \
  extern template void run_attention_kernel<KvT, kHeadDim, kRowsPerWarp>(const Launch&, int, \
                                                                         cudaStream_t)
SIEVE_ATTENTION_EXTERN(bf16, 64, 1);
SIEVE_ATTENTION_EXTERN(bf16, 64, 4);
SIEVE_ATTENTION_EXTERN(bf16, 128, 1);
SIEVE_ATTENTION_EXTERN(bf16, 128, 4);
SIEVE_ATTENTION_EXTERN(bf16, 0, 1);
SIEVE_ATTENTION_EXTERN(bf16, 0, 4);
SIEVE_ATTENTION_EXTERN(float, 64, 1);
SIEVE_ATTENTION_EXTERN(float, 64, 4);
SIEVE_ATTENTION_EXTERN(float, 128, 1);
SIEVE_ATTENTION_EXTERN(float, 128, 4);
SIEVE_ATTENTION_EXTERN(float, 0, 1);
SIEVE_ATTENTION_EXTERN(float, 0, 4);
#undef SIEVE_ATTENTION_EXTERN
}  // namespace attention_impl

namespace {

using attention_impl::kThreads;
using attention_impl::kTile;
using attention_impl::Launch;
using attention_impl::Plan;

constexpr int kPlanThreads = 256;
constexpr int kMinSplitLen = 256;
constexpr int kCombineRowsPerBlock = 4;

// Rows per warp: 1 keeps decode blocks small (a GQA group of 4 fills the 4 warps); 4 reuses each
// K/V tile for 16 query rows in prefill.
int rows_per_warp(const PagedAttentionParams& p) {
  const int64_t group = p.num_heads / p.num_kv_heads;
  return static_cast<int64_t>(p.num_tokens) * group >= 16ll * std::max(p.num_seqs, 1) ? 4 : 1;
}

int target_per_head(int num_sms, int num_kv_heads) {
  return (2 * num_sms + num_kv_heads - 1) / num_kv_heads;
}

// Workspace layout: Plan, item_offset[num_seqs + 1], splits[num_seqs], then (256-aligned) the
// partial outputs and their (max, sum) pairs.
struct WorkspaceLayout {
  size_t item_offset, splits, partial_o, partial_ml, total;
};

WorkspaceLayout workspace_layout(const PagedAttentionParams& p, int num_sms) {
  auto align = [](size_t x) { return (x + 255) / 256 * 256; };
  WorkspaceLayout w{};
  w.item_offset = sizeof(Plan);
  w.splits = w.item_offset + sizeof(int32_t) * (p.num_seqs + 1);
  const int rows = attention_impl::kWarps * rows_per_warp(p);
  const size_t partial_rows =
      2ull * target_per_head(num_sms, p.num_kv_heads) * p.num_kv_heads * rows;
  w.partial_o = align(w.splits + sizeof(int32_t) * p.num_seqs);
  w.partial_ml = align(w.partial_o + partial_rows * p.head_dim * sizeof(float));
  w.total = align(w.partial_ml + partial_rows * sizeof(float2));
  return w;
}

// One block: per-sequence chunks and lengths, the split decision, and the item prefix sums.
__global__ void __launch_bounds__(kPlanThreads)
    attention_plan_kernel(Launch p, int rows, int target, Plan* plan, int32_t* item_offset,
                          int32_t* splits) {
  using Scan = cub::BlockScan<int32_t, kPlanThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ unsigned long long base_sum, work_sum;
  __shared__ int split_len, any_split, carry;
  if (threadIdx.x == 0) {
    base_sum = work_sum = 0;
    any_split = 0;
    carry = 0;
  }
  __syncthreads();
  // Pass 1: chunks_s (kept in item_offset[s]) and the planned length (kept in splits[s]): the
  // most valid (virtual) slots of the sequence's KV heads in this layer.
  for (int s = threadIdx.x; s < p.num_seqs; s += kPlanThreads) {
    const int q_len = p.qo_indptr[s + 1] - p.qo_indptr[s];
    const int chunks = (q_len * p.group + rows - 1) / rows;
    int len = p.kv_lens[s];
    if (p.kv_head_lens) {
      const int physical = len;
      len = 0;
      for (int h = 0; h < p.num_kv_heads; ++h) {
        const int prefix = p.kv_head_lens[(static_cast<int64_t>(s) * p.num_layers + p.layer) *
                                              p.num_kv_heads +
                                          h];
        len = max(len, attention_impl::virtual_limit(physical, prefix, p.kv_gap_ends[s]));
      }
    }
    len = max(len, 0);
    item_offset[s] = chunks;
    splits[s] = len;
    atomicAdd(&base_sum, static_cast<unsigned long long>(chunks));
    atomicAdd(&work_sum, static_cast<unsigned long long>(chunks) * len);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (base_sum >= static_cast<unsigned long long>(target)) {
      split_len = INT_MAX;
    } else {
      const unsigned long long len = max(static_cast<unsigned long long>(kMinSplitLen),
                                         (work_sum + target - 1) / target);
      split_len = static_cast<int>(min((len + kTile - 1) / kTile * kTile,
                                       static_cast<unsigned long long>(INT_MAX / 2)));
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
  if (!p.plan->split_mode) return;
  const int lane = threadIdx.x % 32;
  const int64_t index =
      static_cast<int64_t>(blockIdx.x) * kCombineRowsPerBlock + threadIdx.x / 32;
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
  const int kv_head = head / p.group;
  const int packed = (token - p.qo_indptr[s]) * p.group + head % p.group;
  const int splits = p.splits[s];
  const int64_t first_item = p.item_offset[s] + static_cast<int64_t>(packed / rows) * splits;
  const int row = packed % rows;
  auto partial = [&](int split) {
    return ((first_item + split) * p.num_kv_heads + kv_head) * rows + row;
  };
  float max = -INFINITY;
  for (int i = 0; i < splits; ++i) max = fmaxf(max, p.partial_ml[partial(i)].x);
  float sum = 0.0f;
  for (int i = 0; i < splits; ++i) {
    const float2 ml = p.partial_ml[partial(i)];
    if (ml.x != -INFINITY) sum += ml.y * exp2f(ml.x - max);
  }
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  bf16* dst = p.out + token * p.out_stride_token + head * p.out_stride_head;
  for (int d = lane; d < p.head_dim; d += 32) {
    float acc = 0.0f;
    for (int i = 0; i < splits; ++i) {
      const float2 ml = p.partial_ml[partial(i)];
      if (ml.x != -INFINITY) acc += p.partial_o[partial(i) * p.head_dim + d] * exp2f(ml.x - max);
    }
    dst[d] = __float2bfloat16_rn(acc * inv);
  }
}

template <typename KvT>
void run_instance(const Launch& launch, int rows_per_warp, int grid_items, cudaStream_t stream) {
  using attention_impl::run_attention_kernel;
  const bool four = rows_per_warp == 4;
  switch (launch.head_dim) {
    case 64:
      four ? run_attention_kernel<KvT, 64, 4>(launch, grid_items, stream)
           : run_attention_kernel<KvT, 64, 1>(launch, grid_items, stream);
      break;
    case 128:
      four ? run_attention_kernel<KvT, 128, 4>(launch, grid_items, stream)
           : run_attention_kernel<KvT, 128, 1>(launch, grid_items, stream);
      break;
    default:
      four ? run_attention_kernel<KvT, 0, 4>(launch, grid_items, stream)
           : run_attention_kernel<KvT, 0, 1>(launch, grid_items, stream);
      break;
  }
}

}  // namespace

bool attention_supports(int head_dim, DType kv_dtype) {
  return head_dim > 0 && head_dim % 8 == 0 && head_dim <= attention_impl::kMaxHeadDim &&
         (kv_dtype == DType::kBF16 || kv_dtype == DType::kF32);
}

size_t attention_workspace_bytes(const PagedAttentionParams& params, int num_sms) {
  return workspace_layout(params, num_sms).total;
}

void launch_attention(const PagedAttentionParams& params, void* workspace, int num_sms,
                      cudaStream_t stream) {
  SIEVE_CHECK(attention_supports(params.head_dim, params.kv_dtype))
      << "head_dim " << params.head_dim << ", KV dtype " << params.kv_dtype;
  SIEVE_CHECK(params.num_kv_heads > 0 && params.num_heads % params.num_kv_heads == 0)
      << params.num_heads << " query heads over " << params.num_kv_heads << " KV heads";
  SIEVE_CHECK_EQ(params.kv_head_lens == nullptr, params.kv_gap_ends == nullptr)
      << "kv_head_lens and kv_gap_ends come together";
  if (params.num_tokens == 0 || params.num_seqs == 0) return;
  const WorkspaceLayout w = workspace_layout(params, num_sms);
  auto* base = static_cast<char*>(workspace);
  Launch launch{};
  launch.q = static_cast<const bf16*>(params.q);
  launch.q_stride_token = params.q_stride_token;
  launch.q_stride_head = params.q_stride_head;
  launch.out = static_cast<bf16*>(params.out);
  launch.out_stride_token = params.out_stride_token;
  launch.out_stride_head = params.out_stride_head;
  launch.arena = params.arena;
  launch.layer_page_elems = 2ll * params.num_kv_heads * params.tokens_per_page * params.head_dim;
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
  launch.scale_log2 = params.scale * 1.4426950408889634f;
  launch.plan = reinterpret_cast<const Plan*>(base);
  launch.item_offset = reinterpret_cast<const int32_t*>(base + w.item_offset);
  launch.splits = reinterpret_cast<const int32_t*>(base + w.splits);
  launch.partial_o = reinterpret_cast<float*>(base + w.partial_o);
  launch.partial_ml = reinterpret_cast<float2*>(base + w.partial_ml);

  const int rpw = rows_per_warp(params);
  const int rows = attention_impl::kWarps * rpw;
  const int target = target_per_head(num_sms, params.num_kv_heads);
  attention_plan_kernel<<<1, kPlanThreads, 0, stream>>>(
      launch, rows, target, reinterpret_cast<Plan*>(base),
      reinterpret_cast<int32_t*>(base + w.item_offset), reinterpret_cast<int32_t*>(base + w.splits));
  SIEVE_CUDA_CHECK_LAUNCH();

  // Items never exceed base + target (see the file comment); base <= ⌈rows_total / rows⌉ + seqs.
  const int64_t packed_rows = static_cast<int64_t>(params.num_tokens) * launch.group;
  const int64_t grid_items = (packed_rows + rows - 1) / rows + params.num_seqs + target;
  SIEVE_CHECK_LE(grid_items, INT_MAX);
  if (params.kv_dtype == DType::kBF16) {
    run_instance<bf16>(launch, rpw, static_cast<int>(grid_items), stream);
  } else {
    run_instance<float>(launch, rpw, static_cast<int>(grid_items), stream);
  }
  const int64_t out_rows = static_cast<int64_t>(params.num_tokens) * params.num_heads;
  attention_combine_kernel<<<static_cast<unsigned>((out_rows + kCombineRowsPerBlock - 1) /
                                                   kCombineRowsPerBlock),
                             32 * kCombineRowsPerBlock, 0, stream>>>(launch, rows, params.num_heads,
                                                                     params.num_tokens);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
