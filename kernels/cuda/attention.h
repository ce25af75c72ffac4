#pragma once
// Paged attention launcher (plain C++): causal attention of a flat varlen batch (decode rows and
// prefill chunks together) over the paged KV arena of kernels/backend.h, GQA-aware, split along
// the context for long sequences (flash-decoding) with a combine step. Decode rows run on CUDA
// cores, prefill chunks on tensor cores (mma.sync, FlashAttention-2's scheme). Compacted
// sequences read [0, kv_head_lens) and [kv_gap_ends, causal limit) of each head, and the
// compression hooks (per-slot logit bias, selected slots) apply, as AttentionArgs says.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/kv_cache.h"

namespace sieve::kernels::cuda {

// Everything the kernels read, as pointers and sizes. q/out are bf16 [num_tokens, num_heads,
// head_dim] with the given strides (elements; the last dimension contiguous); the arena is laid
// out as KvCacheLayout says, `kv_dtype` the element type of the layout's format `kv_format`
// (kBF16, kF32, or kU8 for the quantized formats), pages of `page_bytes` a layer.
struct PagedAttentionParams {
  const void* q = nullptr;
  int64_t q_stride_token = 0, q_stride_head = 0;
  void* out = nullptr;
  int64_t out_stride_token = 0, out_stride_head = 0;
  const void* arena = nullptr;
  DType kv_dtype = DType::kBF16;
  int num_layers = 0, num_kv_heads = 0, head_dim = 0, tokens_per_page = 0, num_pages = 0;
  int kv_format = 1;       // kv_cache.h's kKv* id of the layout's format (kKvBF16)
  int64_t page_bytes = 0;  // one layer's copy of a page
  // Optional [num_seqs]: each sequence's format (kKv* ids); null: all of kv_format. The hooks
  // need it null.
  const int32_t* kv_formats = nullptr;
  int layer = 0;
  int num_heads = 0;
  int num_tokens = 0;
  int num_seqs = 0;
  const int32_t* qo_indptr = nullptr;     // [num_seqs + 1]
  const int32_t* kv_indptr = nullptr;     // [num_seqs + 1]
  const int32_t* kv_indices = nullptr;    // page ids
  const int32_t* kv_lens = nullptr;       // [num_seqs]
  const int32_t* kv_head_lens = nullptr;  // optional [num_seqs, num_layers, num_kv_heads]
  const int32_t* kv_gap_ends = nullptr;   // [num_seqs]; given with kv_head_lens
  // The hooks (bf16 KV only); any of them set takes the hooks instances.
  const float* slot_bias = nullptr;          // [num_layers, num_pages, num_kv_heads, tpp]
  const int32_t* slot_bias_seqs = nullptr;   // optional [num_seqs], with slot_bias
  const int32_t* selected_indptr = nullptr;  // [num_seqs * num_kv_heads + 1]
  const int32_t* selected_slots = nullptr;   // may be null when every list is empty
  float scale = 1.0f;
  // Host-known bounds of the sequences' query lengths (0: unknown): a launch class no sequence
  // falls in is skipped.
  int min_q_len = 0, max_q_len = 0;
  bool tensor_cores = false;  // the device has bf16 mma (sm_80 and later)
  // The workspace holds the plan of this batch already (AttentionArgs::reuse_plan).
  bool reuse_plan = false;
};

// Whether the kernels support this head_dim and KV dtype (head_dim a multiple of 8, <= 256).
bool attention_supports(int head_dim, DType kv_dtype);

// Whether prefill chunks of this launch run on the tensor-core kernel (a bf16 or quantized layout,
// quantized tiles dequantized into bf16; head_dim 64 or 128, 16-byte aligned q/out rows, a device
// with bf16 mma); otherwise everything runs on the FMA one.
bool attention_uses_tensor_cores(const PagedAttentionParams& params);

// Device scratch the launch needs (plan, split partials) on a GPU of `num_sms` multiprocessors.
size_t attention_workspace_bytes(const PagedAttentionParams& params, int num_sms);

// Runs attention; `workspace` holds at least attention_workspace_bytes(params, num_sms) bytes.
void launch_attention(const PagedAttentionParams& params, void* workspace, int num_sms,
                      cudaStream_t stream);

}  // namespace sieve::kernels::cuda
