#pragma once
// The Backend: one abstract class of explicit ops, implemented in full by the CPU backend
// (kernels/cpu, the fp32 reference) and the CUDA backend (kernels/cuda). Models are written once
// against these ops; a backend never knows which model, request or policy called it.
//
// Dense arguments are TensorViews on the backend's device. Index arrays (page tables, positions,
// slot mappings) are i32 TensorViews, in FlashInfer's vocabulary.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "core/status.h"
#include "core/tensor.h"
#include "kvcache/formats.h"

namespace sieve::kernels {

enum class BackendKind { kCpu, kCuda };

// Geometry of the paged KV arena. A page holds token slots of every layer: the arena is
// layer-major, layer `l`'s copy of page `p` starts at
//   arena + (l * num_pages + p) * layer_page_bytes()
// A sequence's page table is shared by all layers; slot = page * tokens_per_page + offset.
//
// Pages have a fixed number of bytes; each sequence's KV format (kvcache/formats.h) decides how
// many of its tokens fit in one and how they are laid out (kvcache/README.md, "Formats"): an
// element plane [K | V][kv_head][slot_in_page][data_bytes(head_dim)] (head-major, so one KV
// head's tokens are contiguous), then for quantized formats a scale plane of the same order.
// `format` and `tokens_per_page` describe the sequences an op reads or writes; for_format() gives
// the layout of another format in the same arena. A layout built from a dtype alone (format
// unset, page_bytes 0) is a single-format arena of exactly tokens_per_page tokens of `dtype`.
struct KvCacheLayout {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int tokens_per_page = 0;  // tokens of kv_format() in one page
  int num_pages = 0;
  DType dtype = DType::kF32;  // the element type of kv_format() (u8 for quantized formats)
  std::optional<kvcache::KvFormatId> format;  // unset: the unquantized format of `dtype`
  size_t page_bytes = 0;  // bytes of one layer's copy of a page; 0: tokens_per_page of `dtype`

  kvcache::KvFormatId kv_format() const;
  size_t layer_page_bytes() const {
    return page_bytes > 0 ? page_bytes
                          : 2ull * num_kv_heads * tokens_per_page * head_dim * dtype_size(dtype);
  }
  size_t arena_bytes() const { return layer_page_bytes() * num_layers * num_pages; }
  // The same arena read as `format`: its tokens per page and element type, the page bytes fixed.
  KvCacheLayout for_format(kvcache::KvFormatId format) const;
  // Byte offsets inside one layer's copy of a page of (K or V, kv_head, slot_in_page): its
  // elements, and its scales (quantized formats).
  size_t data_offset(int kv, int kv_head, int slot_in_page) const;
  size_t meta_offset(int kv, int kv_head, int slot_in_page) const;
};

inline kvcache::KvFormatId KvCacheLayout::kv_format() const {
  if (format) return *format;
  return dtype == DType::kF32 ? kvcache::KvFormatId::kF32 : kvcache::KvFormatId::kBF16;
}

inline KvCacheLayout KvCacheLayout::for_format(kvcache::KvFormatId id) const {
  KvCacheLayout out = *this;
  out.page_bytes = layer_page_bytes();
  out.format = id;
  const kvcache::KvFormat& f = kvcache::kv_format(id);
  out.dtype = f.dtype;
  out.tokens_per_page =
      static_cast<int>(out.page_bytes / (2ull * num_kv_heads * f.bytes_per_token_head(head_dim)));
  return out;
}

inline size_t KvCacheLayout::data_offset(int kv, int kv_head, int slot_in_page) const {
  const size_t row =
      (static_cast<size_t>(kv) * num_kv_heads + kv_head) * tokens_per_page + slot_in_page;
  return row * kvcache::kv_format(kv_format()).data_bytes(head_dim);
}

inline size_t KvCacheLayout::meta_offset(int kv, int kv_head, int slot_in_page) const {
  const kvcache::KvFormat& f = kvcache::kv_format(kv_format());
  const size_t rows = 2ull * num_kv_heads * tokens_per_page;
  const size_t row =
      (static_cast<size_t>(kv) * num_kv_heads + kv_head) * tokens_per_page + slot_in_page;
  return rows * f.data_bytes(head_dim) + row * f.meta_bytes(head_dim);
}

// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]). x, w and bias share the compute dtype; y is the
// compute dtype or f32 (the LM head writes f32 logits).
struct GemmArgs {
  TensorView x;
  TensorView w;
  TensorView bias;  // optional (empty view = none)
  TensorView y;
};

// Rotary position embedding, rotate-half (NeoX / Hugging Face) convention, in place on q and k.
struct RopeArgs {
  TensorView q;          // [num_tokens, num_heads, head_dim]
  TensorView k;          // [num_tokens, num_kv_heads, head_dim]
  TensorView positions;  // i32 [num_tokens]
  TensorView inv_freq;   // f32 [rotary_dim / 2]: the (possibly scaled) inverse frequencies
  float attention_scaling = 1.0f;  // multiplies cos and sin (YaRN's mscale); 1 otherwise
};

// Writes this step's new keys and values into their slots of layer `layer`, quantizing them to
// their sequence's format.
struct KvWriteArgs {
  TensorView k;             // [num_tokens, num_kv_heads, head_dim]
  TensorView v;             // [num_tokens, num_kv_heads, head_dim]
  TensorView slot_mapping;  // i32 [num_tokens]; a negative slot skips the token
  TensorView arena;         // u8 [arena_bytes]
  KvCacheLayout layout;
  int layer = 0;
  // Optional, together: each sequence's KvFormatId (i32 [num_seqs]) and its tokens
  // (qo_indptr, i32 [num_seqs + 1]). Without them every token is of layout's format.
  TensorView kv_formats;
  TensorView qo_indptr;
};

// Causal attention of a flat (varlen) batch over the paged cache. Sequence s owns query rows
// [qo_indptr[s], qo_indptr[s+1]) and pages kv_indices[kv_indptr[s] .. kv_indptr[s+1]); its
// first kv_lens[s] slots are in use, the last q_len of them being this step's own tokens. Query i
// of the step (0-based) sees slots [0, kv_len - q_len + i].
//
// A compacted sequence (kvcache::KvManager::compact) has dead slots: for KV head h of layer l
// only [0, kv_head_lens[s][l][h]) (the packed survivors) and [kv_gap_ends[s], kv_len) (tokens
// appended since) are valid. Both arrays are given together or not at all. The valid slots are
// numbered "virtually", without the gap: virtual v is slot v below the head's length and slot
// kv_gap_end + (v - head_len) after it (the identity when nothing is compacted); the selection
// below speaks in virtual slots.
//
// Two optional hooks serve compression policies (docs/design.md, "Paged KV cache"):
// - A per-slot additive logit bias, the log of a merge weight (a slot with bias log w weighs as
//   w copies of itself; -inf drops it, and a row that sees only dropped slots gets zeros). It
//   lives with the pages, so it persists and follows the page table: slot_bias is f32
//   [num_layers, num_pages, num_kv_heads, tokens_per_page], and slot j of sequence s (a physical
//   slot) has bias[layer][kv_indices[kv_indptr[s] + j / tokens_per_page]][kv_head][j %
//   tokens_per_page]. Sequences whose slot_bias_seqs entry is 0 read no bias (and need none set).
// - A sparse selection for this step and layer (Quest-style): (sequence s, KV head h) attends only
//   to the virtual slots selected_slots[selected_indptr[s * num_kv_heads + h] ..
//   selected_indptr[s * num_kv_heads + h + 1]), strictly ascending and below the head's number of
//   valid slots; each row's causal limit still applies. An empty list means all slots.
struct AttentionArgs {
  TensorView q;           // [num_tokens, num_heads, head_dim]
  TensorView out;         // [num_tokens, num_heads, head_dim]
  TensorView arena;       // u8 [arena_bytes]
  KvCacheLayout layout;
  int layer = 0;
  TensorView qo_indptr;   // i32 [num_seqs + 1]
  TensorView kv_indptr;   // i32 [num_seqs + 1]
  TensorView kv_indices;  // i32 [kv_indptr[num_seqs]]
  TensorView kv_lens;     // i32 [num_seqs]
  TensorView kv_head_lens;  // optional i32 [num_seqs, num_layers, num_kv_heads]
  TensorView kv_gap_ends;   // optional i32 [num_seqs]
  TensorView slot_bias;     // optional f32 [num_layers, num_pages, num_kv_heads, tokens_per_page]
  TensorView slot_bias_seqs;   // optional i32 [num_seqs]: 0 = no bias (empty: all read slot_bias)
  TensorView selected_indptr;  // optional i32 [num_seqs * num_kv_heads + 1]
  TensorView selected_slots;   // i32 [selected_indptr[num_seqs * num_kv_heads]], with the indptr
  // Optional i32 [num_seqs]: each sequence's KvFormatId, so one batch mixes formats (each
  // sequence reads its pages as its format: tokens per page, layout, dequantization). Empty:
  // every sequence is of layout's format. slot_bias is indexed with layout.tokens_per_page, so
  // sequences that read it must be of layout's format.
  TensorView kv_formats;
  float scale = 1.0f;  // softmax scale, usually 1/sqrt(head_dim)
  // Host-known bounds of the sequences' query lengths (0: unknown), so a backend can skip the
  // kernels no sequence needs (decode rows and prefill chunks take different kernels on CUDA).
  int min_q_len = 0, max_q_len = 0;
  // Optional u8 scratch of attention_workspace_bytes(); without it the backend uses its own.
  TensorView workspace;
  // Set by a caller whose previous attention call had the same batch and lengths and the same
  // `workspace` (a later layer of one step). Without kv_head_lens or a selection, the lengths do
  // not depend on the layer, so a backend may reuse the work plan it made for that call (CUDA:
  // one plan kernel a step instead of one a layer).
  bool reuse_plan = false;
};

// Copies whole pages, every layer's K and V: copy-on-write of shared prefix pages.
struct PageCopyArgs {
  TensorView arena;      // u8 [arena_bytes]
  KvCacheLayout layout;
  TensorView src_pages;  // i32 [n]
  TensorView dst_pages;  // i32 [n]
};

// Compaction of one sequence: for each (layer, KV head), slot j of the sequence receives its old
// slot keep_slots[layer][kv_head][j] for j < keep_counts[layer][kv_head]. Each row of keep_slots
// is strictly ascending, so moves only go forward and the op works in place.
struct CompactArgs {
  TensorView arena;        // u8 [arena_bytes]
  KvCacheLayout layout;    // of the sequence's format (KvCacheLayout::for_format)
  TensorView page_table;   // i32 [pages of the sequence]
  TensorView keep_slots;   // i32 [num_layers, num_kv_heads, max_keep]
  TensorView keep_counts;  // i32 [num_layers, num_kv_heads]
};

// Copies rows: dst[dst_rows[i], :] = src[src_rows[i], :] for every i. Both views are 2-D with
// contiguous rows of one width and dtype (leading strides may differ: src may be a slice of the
// fused QKV buffer). The model captures the queries compression policies score with.
struct CopyRowsArgs {
  TensorView dst;       // [num_dst_rows, width]
  TensorView dst_rows;  // i32 [n]
  TensorView src;       // [num_src_rows, width]
  TensorView src_rows;  // i32 [n]
};

// Per-slot signals of one sequence's KV cache over every layer, for compression policies
// (docs/design.md, "Compression policies"). Slots are virtual (AttentionArgs): head (l, h) has
// valid_len(l, h) = head_lens[l][h] + num_tokens - gap_end valid slots when head_lens is given,
// else num_tokens. Each output is f32 [num_layers, heads, slot_stride] with slot_stride >= every
// valid_len; entries past a head's valid_len are left as they are. Empty outputs are skipped.
//
// Window attention uses the sequence's last num_queries tokens' post-RoPE queries (the newest
// last), all among the slots appended since any compaction: query j sees the first
// valid_len - (num_queries - 1 - j) slots of its head, as it did in its own step, less the
// slots of `skip` ranges, which take no part in its softmax (KVzip's reconstruction scores a
// chunk over the sinks, the chunk and the repeated tokens alone).
struct KvSignalArgs {
  TensorView arena;       // u8 [arena_bytes]
  KvCacheLayout layout;   // of the sequence's format (KvCacheLayout::for_format)
  TensorView page_table;  // i32 [pages of the sequence]
  int num_tokens = 0;     // physical slots in use
  TensorView head_lens;   // optional i32 [num_layers, num_kv_heads]: a compacted sequence's
  int gap_end = 0;        //   packed survivors, and where its appended slots begin
  // [num_layers, >= num_queries, num_heads, head_dim], compute dtype; heads contiguous within a
  // row, layers and rows at any stride.
  TensorView queries;
  int num_queries = 0;
  float scale = 1.0f;     // softmax scale, usually 1/sqrt(head_dim)
  int slot_stride = 0;
  // sum over the window's queries of softmax(q·kᵀ·scale), per query head: [L, num_heads, S]
  TensorView window_attention;
  // sum over the window's queries of the max over the KV head's query heads: [L, num_kv_heads, S]
  TensorView window_attention_group_max;
  // max over the window's queries and the KV head's query heads, taken with the values already
  // there (the caller zeroes it before a sequence's first window; later windows raise it):
  // [L, num_kv_heads, S]. KVzip's score over the windows of its reconstruction pass.
  TensorView window_attention_max;
  // Virtual slots [skip_begin[i], skip_end[i]) that the window's softmax leaves out; their window
  // outputs are 0 (window_attention_max: left as they are). Empty ranges by default.
  int skip_begin[2] = {0, 0};
  int skip_end[2] = {0, 0};
  TensorView key_norms;    // ||k||: [L, num_kv_heads, S]
  TensorView value_norms;  // ||v||: [L, num_kv_heads, S]
  // k̂·ā, with k̂ = k/||k|| and ā the mean of the head's k̂ over its valid slots (KeyDiff's
  // anchor; also G-KV's redundancy): [L, num_kv_heads, S]
  TensorView key_anchor_dot;
};

// Adds queries to their running first and second moments (ExpectedAttention's query
// statistics): for each query head h, moments[h] holds sum_t q[t, h] (head_dim entries) followed
// by sum_t q[t, h] q[t, h]ᵀ (head_dim × head_dim, row-major), and every row t of `q` is added.
struct QueryMomentArgs {
  TensorView q;        // [num_rows, num_heads, head_dim], compute dtype; heads contiguous in a row
  TensorView moments;  // f32 [num_heads, head_dim * (head_dim + 1)], contiguous; accumulated into
};

// ExpectedAttention's logits of one sequence's slots (Devoto et al., 2025): the log of the expected
// exp(q·k·scale) when q is Gaussian with the mean mu and covariance Σ of the `count` queries summed
// in `moments` (QueryMomentArgs), rotated by the RoPE averaged over future positions:
//   z = scale · mu·k' + scale² / 2 · k'ᵀ Σ k',   k' = Rᵀ k
// (Σ = 0 without `covariance`). R rotates each pair (i, i + rotary_dim / 2) by
// [[cos_i, -sin_i], [sin_i, cos_i]] and leaves dimensions past rotary_dim as they are. Slots and
// the cache fields are KvSignalArgs's; out is f32 [num_layers, num_heads, slot_stride], entries
// past a head's valid slots left as they are.
struct ExpectedLogitArgs {
  TensorView arena;  // u8 [arena_bytes]
  KvCacheLayout layout;
  TensorView page_table;  // i32 [pages of the sequence]
  int num_tokens = 0;
  TensorView head_lens;  // optional i32 [num_layers, num_kv_heads]
  int gap_end = 0;
  TensorView moments;  // f32 [num_layers, num_heads, head_dim * (head_dim + 1)]
  int64_t count = 0;   // queries summed into moments (> 0)
  // Host f32 [rotary_dim / 2] each: the averaged rotation's cos and sin per pair.
  TensorView rope_cos, rope_sin;
  bool covariance = true;
  float scale = 1.0f;
  int slot_stride = 0;
  TensorView out;
};

// Per-sequence sampling, one row of logits each. A sequence's random draw depends only on its
// seed and its step, never on the batch around it.
struct SampleArgs {
  TensorView logits;       // f32 [num_seqs, vocab]; may be modified in place
  TensorView temperature;  // f32 [num_seqs]; 0 = greedy
  TensorView top_k;        // i32 [num_seqs]; <= 0 = off
  TensorView top_p;        // f32 [num_seqs]; 1 = off
  TensorView min_p;        // f32 [num_seqs]; 0 = off
  TensorView seeds;        // i64 [num_seqs]
  TensorView steps;        // i64 [num_seqs]: index of the token being sampled
  TensorView out_tokens;   // i32 [num_seqs]
};

// Repetition, frequency and presence penalties and token masks, in place on rows of logits, with
// vLLM's semantics. Row r lists its tokens in token_ids[token_indptr[r] .. token_indptr[r+1]),
// each at most once (ids outside the vocabulary are skipped); for each listed token t, with
// c = output_counts[i] (times t was generated so far) and f = flags[i]:
//   x = logits[r, t]
//   if f & kPenaltySeen (t is in the prompt or the output): x = x > 0 ? x / rep[r] : x * rep[r]
//   if c > 0: x -= freq[r] * c + pres[r]
//   if f & kPenaltyMask (a stop token before min_tokens): x = -inf
// Unlisted tokens keep their logits.
inline constexpr uint8_t kPenaltySeen = 1;
inline constexpr uint8_t kPenaltyMask = 2;
struct PenaltyArgs {
  TensorView logits;              // f32 [num_rows, vocab]; modified in place
  TensorView token_indptr;        // i32 [num_rows + 1]
  TensorView token_ids;           // i32 [token_indptr[num_rows]]
  TensorView output_counts;       // i32 [token_indptr[num_rows]]
  TensorView flags;               // u8 [token_indptr[num_rows]]: kPenaltySeen | kPenaltyMask
  TensorView repetition_penalty;  // f32 [num_rows]; 1 = off
  TensorView frequency_penalty;   // f32 [num_rows]; 0 = off
  TensorView presence_penalty;    // f32 [num_rows]; 0 = off
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual BackendKind kind() const = 0;
  virtual std::string name() const = 0;
  // The dtype of weights, activations and the KV cache on this backend: f32 on the CPU (the
  // exact reference), bf16 on CUDA. Logits and sampling are always f32.
  virtual DType compute_dtype() const = 0;
  // Whether gemm takes weights in GGUF block formats (core/dtype.h) as they are (and embed a
  // table in one); the loader dequantizes them for a backend that does not.
  virtual bool takes_block_weights() const { return false; }
  // Whether allocate() returns host memory that the host may read and write in place (ggml's
  // buffer is_host): callers then skip copies to and from the device. Asked instead of kind().
  virtual bool memory_is_host() const { return false; }

  // Memory on the backend's device; errors (out of memory) are values.
  virtual StatusOr<Tensor> allocate(DType dtype, std::span<const int64_t> shape) = 0;
  StatusOr<Tensor> allocate(DType dtype, std::initializer_list<int64_t> shape) {
    return allocate(dtype, std::span<const int64_t>(shape.begin(), shape.size()));
  }
  // Copies between two contiguous views of equal size and dtype, each on the host or this
  // backend's device.
  virtual void copy(const TensorView& dst, const TensorView& src) = 0;
  virtual void synchronize() = 0;
  // Fills `out` (compute dtype or f32) with values uniform in [mean - std·√3, mean + std·√3],
  // a counter-based function of (seed, index): random weights for `--load-format dummy`.
  virtual void fill_random(const TensorView& out, uint64_t seed, float mean, float std) = 0;

  // out[i, :] = table[ids[i], :]
  virtual void embed(const TensorView& ids, const TensorView& table, const TensorView& out) = 0;
  // out = x / rms(x) * weight, per row of the last dimension.
  virtual void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight,
                        float eps) = 0;
  // residual += x; out = rms_norm(residual) * weight.
  virtual void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                            const TensorView& weight, float eps) = 0;
  virtual void gemm(const GemmArgs& args) = 0;
  virtual void rope(const RopeArgs& args) = 0;
  // out[n, f] = silu(gate_up[n, :f]) * gate_up[n, f:]
  virtual void silu_mul(const TensorView& out, const TensorView& gate_up) = 0;
  // In place, per row of the last dimension.
  virtual void softmax(const TensorView& x) = 0;
  virtual void write_kv(const KvWriteArgs& args) = 0;
  // rope(r), then write_kv(w), where r.k is the rotary part of w.k (the first dimensions of each
  // head). A backend may do both in one pass (CUDA does: one launch less per layer).
  virtual void rope_write_kv(const RopeArgs& r, const KvWriteArgs& w) {
    rope(r);
    write_kv(w);
  }
  // Whether write_kv, attention, compact_kv and kv_signals handle sequences of `format`.
  virtual bool supports_kv_format(kvcache::KvFormatId format) const = 0;
  virtual void copy_pages(const PageCopyArgs& args) = 0;
  virtual void compact_kv(const CompactArgs& args) = 0;
  virtual void attention(const AttentionArgs& args) = 0;
  virtual void copy_rows(const CopyRowsArgs& args) = 0;
  virtual void kv_signals(const KvSignalArgs& args) = 0;
  virtual void accumulate_query_moments(const QueryMomentArgs& args) = 0;
  virtual void expected_logits(const ExpectedLogitArgs& args) = 0;
  virtual void sample(const SampleArgs& args) = 0;
  // Penalties and masks before sample(), on the rows' own logits (logprobs read them before).
  virtual void apply_penalties(const PenaltyArgs& args) = 0;

  // Scratch attention() needs for up to `max_num_seqs` sequences of this geometry; the model
  // allocates it once (AttentionArgs::workspace) so no step allocates.
  virtual size_t attention_workspace_bytes(int max_num_seqs, int num_kv_heads,
                                           int head_dim) const {
    (void)max_num_seqs, (void)num_kv_heads, (void)head_dim;
    return 0;
  }

  // Device memory (free, total) in bytes, where the backend owns a device of its own.
  virtual std::optional<std::pair<size_t, size_t>> memory_info() const { return std::nullopt; }

  // Graphs: capture_graph() records the ops `body` issues without running them (every input
  // must already be on the device, at addresses that stay valid), and replay_graph() runs the
  // recording: decode steps as CUDA graphs. Backends without graphs return Unimplemented.
  virtual bool supports_graphs() const { return false; }
  virtual StatusOr<int> capture_graph(const std::function<void()>& body) {
    (void)body;
    return UnimplementedError(name() + " has no graphs");
  }
  virtual void replay_graph(int graph) { (void)graph; }
};

enum class DevicePreference { kAuto, kCpu, kCuda };

// The one place that knows whether CUDA was built. kAuto takes CUDA when a device exists and
// otherwise logs that it falls back to the CPU; kCuda without a device is an error.
StatusOr<std::unique_ptr<Backend>> make_backend(DevicePreference preference);

}  // namespace sieve::kernels
