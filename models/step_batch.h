#pragma once
// One step's inputs as the engine builds them (host arrays) and the bounds every step keeps.

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace sieve::models {

// One step's flat batch (docs/design.md, "The step batch"), host arrays the runner copies to the
// device. Sequence s owns tokens [qo_indptr[s], qo_indptr[s+1]) and pages
// kv_indices[kv_indptr[s] .. kv_indptr[s+1]); kv_lens[s] counts its valid slots including this
// step's tokens.
struct StepBatch {
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens]
  std::vector<int32_t> slot_mapping;  // [num_tokens]: where each token's K/V is written
  std::vector<int32_t> qo_indptr;     // [num_seqs + 1]
  std::vector<int32_t> kv_indptr;     // [num_seqs + 1]
  std::vector<int32_t> kv_indices;    // page ids
  std::vector<int32_t> kv_lens;       // [num_seqs]
  // Optional, together: compacted sequences' valid slots (kernels::AttentionArgs).
  std::vector<int32_t> kv_head_lens;  // [num_seqs, num_layers, num_kv_heads]
  std::vector<int32_t> kv_gap_ends;   // [num_seqs]
  // Optional [num_seqs]: each sequence's kvcache::KvFormatId when the batch mixes formats
  // (kernels::AttentionArgs::kv_formats); empty: all are of the layout's format.
  std::vector<int32_t> kv_formats;
  std::vector<int32_t> logits_indices;  // token rows whose logits are wanted
  // Optional [num_seqs]: the length dynamic-NTK RoPE computes a sequence's frequencies for
  // (default: its largest position in the step plus one). A chunked prompt passes the whole
  // prompt's length, as transformers sees the prompt in one forward.
  std::vector<int32_t> rope_lens;
  // Optional, together: token rows whose post-RoPE queries are kept for compression policies;
  // row capture_rows[i] of every layer goes to row capture_slots[i] of the query store
  // (Transformer::set_query_store). Steps that capture run eagerly.
  std::vector<int32_t> capture_rows;
  std::vector<int32_t> capture_slots;
  // Optional: query statistics for compression policies (ExpectedAttention). The pre-RoPE
  // queries of token rows [begin, end) are added, layer by layer, to `moments`: f32 [num_layers,
  // num_heads, head_dim * (head_dim + 1)] on the backend's device (accumulate_query_moments).
  // Steps that gather them run eagerly.
  struct MomentRows {
    int32_t begin = 0, end = 0;
    TensorView moments;
  };
  std::vector<MomentRows> moment_rows;

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_seqs() const { return static_cast<int>(kv_lens.size()); }
};

// Bounds of one step, fixed at start-up: all activation and index memory is allocated then.
struct StepLimits {
  int max_num_tokens = 512;      // tokens in one step (the prefill chunk size)
  int max_num_seqs = 256;        // sequences in one step
  int max_kv_indices = 1 << 16;  // page-table entries of one step, over all its sequences
  // Decode steps of up to this many sequences replay graphs captured per batch-size bucket, on
  // a backend that has them (0: every step eager, vLLM's --enforce-eager).
  int max_graph_seqs = 256;
};

}  // namespace sieve::models
