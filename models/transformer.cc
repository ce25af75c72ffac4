#include "models/transformer.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>

#include "spdlog/spdlog.h"

namespace sieve::models {

using kernels::AttentionArgs;
using kernels::Backend;
using kernels::GemmArgs;
using kernels::KvCacheLayout;
using kernels::KvWriteArgs;
using kernels::RopeArgs;

Transformer::Transformer(const ModelConfig& config, ModelWeights weights, Backend& backend,
                         const StepLimits& limits)
    : config_(config),
      weights_(std::move(weights)),
      backend_(backend),
      limits_(limits),
      rope_(compute_rope_frequencies(config)) {}

StatusOr<std::unique_ptr<Transformer>> Transformer::create(const ModelConfig& config,
                                                           ModelWeights weights, Backend& backend,
                                                           const StepLimits& limits) {
  if (limits.max_num_tokens <= 0 || limits.max_num_seqs <= 0 || limits.max_kv_indices <= 0) {
    return InvalidArgumentError("step limits must be positive");
  }
  if (static_cast<int>(weights.layers.size()) != config.num_layers) {
    return InvalidArgumentError("weights hold " + std::to_string(weights.layers.size()) +
                                " layers, the config " + std::to_string(config.num_layers));
  }
  std::unique_ptr<Transformer> model(
      new Transformer(config, std::move(weights), backend, limits));
  RETURN_IF_ERROR(model->allocate_workspace());
  return model;
}

Status Transformer::allocate_workspace() {
  const int64_t t = limits_.max_num_tokens;
  const int64_t seqs = limits_.max_num_seqs;
  const ModelConfig& c = config_;
  const DType dtype = backend_.compute_dtype();
  auto alloc = [&](std::initializer_list<int64_t> shape, Tensor& out) -> Status {
    ASSIGN_OR_RETURN(out, backend_.allocate(dtype, shape));
    return OkStatus();
  };
  auto alloc_i32 = [&](int64_t n, Tensor& out) -> Status {
    ASSIGN_OR_RETURN(out, backend_.allocate(DType::kI32, {n}));
    return OkStatus();
  };
  for (Tensor* buffer : {&ids_, &positions_, &slots_, &rows_, &capture_rows_, &capture_slots_}) {
    RETURN_IF_ERROR(alloc_i32(t, *buffer));
  }
  for (Tensor* buffer : {&qo_indptr_, &kv_indptr_}) RETURN_IF_ERROR(alloc_i32(seqs + 1, *buffer));
  RETURN_IF_ERROR(alloc_i32(seqs, kv_lens_));
  RETURN_IF_ERROR(alloc_i32(seqs, gap_ends_));
  RETURN_IF_ERROR(alloc_i32(seqs, kv_formats_));
  RETURN_IF_ERROR(alloc_i32(seqs * c.num_layers * c.num_kv_heads, head_lens_));
  RETURN_IF_ERROR(alloc_i32(limits_.max_kv_indices, kv_indices_));
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, hidden_));
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, normed_));
  RETURN_IF_ERROR(alloc({t, c.q_dim() + 2 * c.kv_dim()}, qkv_));
  RETURN_IF_ERROR(alloc({t, c.q_dim()}, attn_));
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, proj_));
  RETURN_IF_ERROR(alloc({t, 2 * c.intermediate_size}, gate_up_));
  RETURN_IF_ERROR(alloc({t, c.intermediate_size}, act_));
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, gathered_));
  ASSIGN_OR_RETURN(logits_, backend_.allocate(DType::kF32, {seqs, c.vocab_size}));
  if (const size_t bytes = backend_.attention_workspace_bytes(
          static_cast<int>(seqs), c.num_kv_heads, c.head_dim);
      bytes > 0) {
    ASSIGN_OR_RETURN(attention_workspace_,
                     backend_.allocate(DType::kU8, {static_cast<int64_t>(bytes)}));
  }
  ASSIGN_OR_RETURN(inv_freq_, backend_.allocate(DType::kF32, {static_cast<int64_t>(rope_.inv_freq.size())}));
  if (c.rope_scaling.type == RopeType::kDynamic) {
    const int64_t half = static_cast<int64_t>(rope_.inv_freq.size());
    host_inv_freq_ = Tensor::empty(DType::kF32, {t, half});
    std::fill_n(host_inv_freq_.data<float>(), t * half, 0.0f);  // padding rows of graph steps
    ASSIGN_OR_RETURN(token_inv_freq_, backend_.allocate(DType::kF32, {t, half}));
  }
  backend_.copy(inv_freq_, TensorView(rope_.inv_freq.data(), DType::kF32,
                                      {static_cast<int64_t>(rope_.inv_freq.size())}));
  return OkStatus();
}

TensorView Transformer::upload(const std::vector<int32_t>& host, const Tensor& device_buffer,
                               int64_t n) {
  SIEVE_CHECK_LE(n, static_cast<int64_t>(host.size()));
  const TensorView in_place(const_cast<int32_t*>(host.data()), DType::kI32, {n});
  if (backend_.kind() == kernels::BackendKind::kCpu) return in_place;
  SIEVE_CHECK_LE(n, device_buffer.numel()) << "step exceeds the limits set at start-up";
  const TensorView device = device_buffer.view().slice(0, 0, n);
  backend_.copy(device, in_place);
  return device;
}

// Dynamic NTK scaling recomputes the frequencies from the sequence's length (transformers uses
// the longest position in the forward call plus one), so each token gets its sequence's row.
void Transformer::rope_frequencies(const StepBatch& batch) {
  const int64_t half = static_cast<int64_t>(rope_.inv_freq.size());

  for (int s = 0; s < batch.num_seqs(); ++s) {
    int64_t max_position = 0;
    for (int t = batch.qo_indptr[s]; t < batch.qo_indptr[s + 1]; ++t) {
      max_position = std::max<int64_t>(max_position, batch.positions[t]);
    }
    const int64_t len = batch.rope_lens.empty()
                            ? max_position + 1
                            : std::max<int64_t>(batch.rope_lens[s], max_position + 1);
    const RopeFrequencies f = compute_rope_frequencies(config_, len);
    for (int t = batch.qo_indptr[s]; t < batch.qo_indptr[s + 1]; ++t) {
      std::memcpy(host_inv_freq_.data<float>() + t * half, f.inv_freq.data(),
                  half * sizeof(float));
    }
  }
  const TensorView host = host_inv_freq_.view().slice(0, 0, batch.num_tokens());
  token_inv_freq_view_ = token_inv_freq_.view().slice(0, 0, batch.num_tokens());
  backend_.copy(token_inv_freq_view_, host);
}

void Transformer::attention_block(int layer, const TensorView& kv_arena,
                                  const KvCacheLayout& layout, int64_t n, int min_q_len,
                                  int max_q_len) {
  const ModelConfig& c = config_;
  const LayerWeights& w = weights_.layers[layer];
  const TensorView normed = normed_.view().slice(0, 0, n);
  const TensorView qkv = qkv_.view().slice(0, 0, n);
  backend_.gemm(GemmArgs{normed, w.qkv, w.qkv_bias, qkv});
  const TensorView q = qkv.slice(1, 0, c.q_dim()).unflatten(1, c.num_heads, c.head_dim);
  const TensorView k =
      qkv.slice(1, c.q_dim(), c.q_dim() + c.kv_dim()).unflatten(1, c.num_kv_heads, c.head_dim);
  const TensorView v = qkv.slice(1, c.q_dim() + c.kv_dim(), c.q_dim() + 2 * c.kv_dim())
                           .unflatten(1, c.num_kv_heads, c.head_dim);
  if (c.qk_norm) {
    backend_.rms_norm(q, q, w.q_norm, static_cast<float>(c.rms_norm_eps));
    backend_.rms_norm(k, k, w.k_norm, static_cast<float>(c.rms_norm_eps));
  }
  const bool dynamic = c.rope_scaling.type == RopeType::kDynamic;
  const TensorView inv_freq = dynamic ? token_inv_freq_view_ : inv_freq_.view();
  // Query statistics are of the queries before RoPE (ExpectedAttention rotates them itself).
  for (const StepBatch::MomentRows& m : moment_rows_) {
    backend_.accumulate_query_moments({q.slice(0, m.begin, m.end), m.moments.select(0, layer)});
  }
  // Rotary dimensions are the first rotary_dim of each head (partial rotary factor).
  backend_.rope_write_kv(RopeArgs{q.slice(2, 0, c.rotary_dim()), k.slice(2, 0, c.rotary_dim()),
                                  positions_view_, inv_freq, rope_.attention_scaling},
                         KvWriteArgs{k, v, slots_view_, kv_arena, layout, layer, kv_formats_view_,
                                     kv_formats_view_.empty() ? TensorView() : qo_indptr_view_});
  if (!capture_rows_view_.empty()) {
    backend_.copy_rows({query_store_.select(0, layer), capture_slots_view_,
                        qkv.slice(1, 0, c.q_dim()), capture_rows_view_});
  }
  const TensorView attn = attn_.view().slice(0, 0, n).unflatten(1, c.num_heads, c.head_dim);
  AttentionArgs args;
  args.q = q;
  args.out = attn;
  args.arena = kv_arena;
  args.layout = layout;
  args.layer = layer;
  args.qo_indptr = qo_indptr_view_;
  args.kv_indptr = kv_indptr_view_;
  args.kv_indices = kv_indices_view_;
  args.kv_lens = kv_lens_view_;
  args.kv_head_lens = head_lens_view_;
  args.kv_gap_ends = gap_ends_view_;
  args.kv_formats = kv_formats_view_;
  args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  args.min_q_len = min_q_len;
  args.max_q_len = max_q_len;
  args.workspace = attention_workspace_;
  // Layers after the first see the same batch and, without per-layer lengths, the same plan.
  args.reuse_plan = layer > 0 && head_lens_view_.empty();
  const auto start = std::chrono::steady_clock::now();
  backend_.attention(args);
  attention_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  backend_.gemm(GemmArgs{attn_.view().slice(0, 0, n), w.o_proj, {}, proj_.view().slice(0, 0, n)});
}

void Transformer::mlp_block(int layer, int64_t n) {
  const LayerWeights& w = weights_.layers[layer];
  const TensorView gate_up = gate_up_.view().slice(0, 0, n);
  const TensorView act = act_.view().slice(0, 0, n);
  backend_.gemm(GemmArgs{normed_.view().slice(0, 0, n), w.gate_up, {}, gate_up});
  backend_.silu_mul(act, gate_up);
  backend_.gemm(GemmArgs{act, w.down, {}, proj_.view().slice(0, 0, n)});
}

void Transformer::upload_batch(const StepBatch& batch) {
  const int64_t n = batch.num_tokens();
  ids_view_ = upload(batch.token_ids, ids_, n);
  positions_view_ = upload(batch.positions, positions_, n);
  slots_view_ = upload(batch.slot_mapping, slots_, n);
  qo_indptr_view_ = upload(batch.qo_indptr, qo_indptr_, batch.num_seqs() + 1);
  kv_indptr_view_ = upload(batch.kv_indptr, kv_indptr_, batch.num_seqs() + 1);
  kv_indices_view_ = upload(batch.kv_indices, kv_indices_, batch.kv_indices.size());
  kv_lens_view_ = upload(batch.kv_lens, kv_lens_, batch.num_seqs());
  SIEVE_CHECK_EQ(batch.kv_head_lens.empty(), batch.kv_gap_ends.empty());
  head_lens_view_ = batch.kv_head_lens.empty()
                        ? TensorView()
                        : upload(batch.kv_head_lens, head_lens_, batch.kv_head_lens.size());
  gap_ends_view_ = batch.kv_gap_ends.empty()
                       ? TensorView()
                       : upload(batch.kv_gap_ends, gap_ends_, batch.num_seqs());
  SIEVE_CHECK(batch.kv_formats.empty() ||
              static_cast<int>(batch.kv_formats.size()) == batch.num_seqs());
  kv_formats_view_ = batch.kv_formats.empty()
                         ? TensorView()
                         : upload(batch.kv_formats, kv_formats_, batch.num_seqs());
  rows_view_ = upload(batch.logits_indices, rows_, batch.logits_indices.size());
  SIEVE_CHECK_EQ(batch.capture_rows.size(), batch.capture_slots.size());
  SIEVE_CHECK(batch.capture_rows.empty() || !query_store_.empty()) << "captures without a store";
  capture_rows_view_ = batch.capture_rows.empty()
                           ? TensorView()
                           : upload(batch.capture_rows, capture_rows_, batch.capture_rows.size());
  capture_slots_view_ =
      batch.capture_rows.empty()
          ? TensorView()
          : upload(batch.capture_slots, capture_slots_, batch.capture_slots.size());
  moment_rows_ = batch.moment_rows;
  if (config_.rope_scaling.type == RopeType::kDynamic) rope_frequencies(batch);
}

void Transformer::run(int64_t n, int64_t num_logits, bool logits_rows_are_tokens,
                      const TensorView& kv_arena, const KvCacheLayout& layout, int min_q_len,
                      int max_q_len) {
  const ModelConfig& c = config_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const TensorView hidden = hidden_.view().slice(0, 0, n);
  const TensorView normed = normed_.view().slice(0, 0, n);
  const TensorView proj = proj_.view().slice(0, 0, n);
  backend_.embed(ids_view_, weights_.embed, hidden);
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& w = weights_.layers[layer];
    // The residual stream lives in `hidden`: add the previous block's output, then normalize.
    if (layer == 0) {
      backend_.rms_norm(normed, hidden, w.input_norm, eps);
    } else {
      backend_.add_rms_norm(normed, hidden, proj, w.input_norm, eps);
    }
    attention_block(layer, kv_arena, layout, n, min_q_len, max_q_len);
    backend_.add_rms_norm(normed, hidden, proj, w.post_norm, eps);
    mlp_block(layer, n);
  }
  backend_.add_rms_norm(normed, hidden, proj, weights_.final_norm, eps);
  if (num_logits == 0) return;
  // Only the requested rows go through the LM head (gathered first unless they are all rows).
  TensorView rows = normed.slice(0, 0, num_logits);
  if (!logits_rows_are_tokens) {
    rows = gathered_.view().slice(0, 0, num_logits);
    backend_.embed(rows_view_, normed, rows);
  }
  backend_.gemm(GemmArgs{rows, weights_.lm_head, {}, logits_.view().slice(0, 0, num_logits)});
}

void Transformer::set_query_store(const TensorView& store) {
  SIEVE_CHECK(store.ndim() == 3 && store.size(0) == config_.num_layers &&
              store.size(2) == config_.q_dim() && store.dtype() == backend_.compute_dtype())
      << "query store " << store.shape_string();
  query_store_ = store;
}

// A decode batch (one token per sequence, every one sampled, no compacted sequence) over the
// captured arena takes the smallest bucket that holds it.
int Transformer::graph_bucket(const StepBatch& batch, const TensorView& kv_arena) const {
  if (graph_buckets_.empty() || kv_arena.raw() != graph_arena_) return -1;
  const int n = batch.num_tokens();
  if (n != batch.num_seqs() || n > graph_buckets_.back() || !batch.kv_head_lens.empty() ||
      !batch.capture_rows.empty() || !batch.moment_rows.empty() || !batch.kv_formats.empty() ||
      static_cast<int>(batch.logits_indices.size()) != n) {
    return -1;
  }
  for (int i = 0; i < n; ++i) {
    if (batch.qo_indptr[i + 1] != i + 1 || batch.logits_indices[i] != i) return -1;
  }
  return static_cast<int>(
      std::lower_bound(graph_buckets_.begin(), graph_buckets_.end(), n) - graph_buckets_.begin());
}

// Padding sequences own no tokens and no pages; padding tokens write no K/V (slot -1) and
// belong to no sequence, so attention leaves their rows alone; their logits rows are ignored.
void Transformer::pad_decode_batch(const StepBatch& batch, int size) {
  StepBatch& p = padded_;
  const int n = batch.num_tokens();
  auto pad = [](std::vector<int32_t>& dst, const std::vector<int32_t>& src, size_t count,
                int32_t value) {
    dst.assign(src.begin(), src.end());
    dst.resize(count, value);
  };
  pad(p.token_ids, batch.token_ids, size, 0);
  pad(p.positions, batch.positions, size, 0);
  pad(p.slot_mapping, batch.slot_mapping, size, -1);
  pad(p.qo_indptr, batch.qo_indptr, size + 1, n);
  pad(p.kv_indptr, batch.kv_indptr, size + 1, batch.kv_indptr.back());
  p.kv_indices.assign(batch.kv_indices.begin(), batch.kv_indices.end());
  pad(p.kv_lens, batch.kv_lens, size, 0);
  p.kv_head_lens.clear();
  p.kv_gap_ends.clear();
  p.kv_formats.clear();
  p.logits_indices.resize(size);
  for (int i = 0; i < size; ++i) p.logits_indices[i] = i;
  if (batch.rope_lens.empty()) {
    p.rope_lens.clear();
  } else {
    pad(p.rope_lens, batch.rope_lens, size, 1);
  }
}

Status Transformer::warm_up(const TensorView& kv_arena, const KvCacheLayout& layout) {
  if (backend_.memory_info()) {
    // A stand-in prompt of max_num_tokens tokens over page 0 repeated; no K/V written.
    const auto start = std::chrono::steady_clock::now();
    const int n = limits_.max_num_tokens;
    StepBatch batch;
    batch.token_ids.assign(n, 0);
    batch.slot_mapping.assign(n, -1);
    for (int t = 0; t < n; ++t) batch.positions.push_back(t);
    const int pages = (n + layout.tokens_per_page - 1) / layout.tokens_per_page;
    batch.qo_indptr = {0, n};
    batch.kv_indptr = {0, pages};
    batch.kv_indices.assign(pages, 0);
    batch.kv_lens = {n};
    batch.logits_indices = {n - 1};
    forward(batch, kv_arena, layout);
    backend_.synchronize();
    spdlog::info("warmed up with a {}-token step in {:.0f} ms", n,
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  return capture_graphs(kv_arena, layout);
}

Status Transformer::capture_graphs(const TensorView& kv_arena, const KvCacheLayout& layout) {
  graph_buckets_.clear();
  graph_ids_.clear();
  graph_arena_ = nullptr;
  const int largest = std::min({limits_.max_graph_seqs, limits_.max_num_seqs,
                                limits_.max_num_tokens});
  if (largest <= 0 || !backend_.supports_graphs()) return OkStatus();
  // vLLM's buckets: 1, 2, 4, then every multiple of 8.
  std::vector<int> buckets;
  for (int b : {1, 2, 4}) {
    if (b <= largest) buckets.push_back(b);
  }
  for (int b = 8; b <= largest; b += 8) buckets.push_back(b);
  if (buckets.back() != largest) buckets.push_back(largest);
  const auto start = std::chrono::steady_clock::now();
  std::vector<int> ids(buckets.size());
  // Largest first, so every buffer has its final size before the first capture.
  for (int i = static_cast<int>(buckets.size()) - 1; i >= 0; --i) {
    const int b = buckets[i];
    // A stand-in batch: one slot of page 0 per sequence, no K/V written.
    StepBatch batch;
    batch.token_ids.assign(b, 0);
    batch.positions.assign(b, 0);
    batch.slot_mapping.assign(b, -1);
    for (int s = 0; s <= b; ++s) {
      batch.qo_indptr.push_back(s);
      batch.kv_indptr.push_back(s);
    }
    batch.kv_indices.assign(b, 0);
    batch.kv_lens.assign(b, 1);
    for (int s = 0; s < b; ++s) batch.logits_indices.push_back(s);
    upload_batch(batch);
    auto body = [&] { run(b, b, true, kv_arena, layout, 1, 1); };
    body();  // warm-up: cuBLAS's algorithm choice, lazy module loads
    ASSIGN_OR_RETURN(ids[i], backend_.capture_graph(body));
  }
  backend_.synchronize();
  graph_buckets_ = std::move(buckets);
  graph_ids_ = std::move(ids);
  graph_arena_ = kv_arena.raw();
  spdlog::info("captured {} decode graphs (batch sizes 1 to {}) in {:.0f} ms",
               graph_buckets_.size(), graph_buckets_.back(),
               std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                   .count());
  return OkStatus();
}

TensorView Transformer::forward(const StepBatch& batch, const TensorView& kv_arena,
                                const KvCacheLayout& layout) {
  const int64_t n = batch.num_tokens();
  const int64_t num_logits = static_cast<int64_t>(batch.logits_indices.size());
  SIEVE_CHECK(n > 0 && n <= limits_.max_num_tokens) << "step of " << n << " tokens";
  SIEVE_CHECK_LE(batch.num_seqs(), limits_.max_num_seqs);
  SIEVE_CHECK_LE(num_logits, limits_.max_num_seqs);
  for (int32_t row : batch.logits_indices) SIEVE_CHECK(row >= 0 && row < n) << "row " << row;
  last_num_tokens_ = n;
  if (const int bucket = graph_bucket(batch, kv_arena); bucket >= 0) {
    pad_decode_batch(batch, graph_buckets_[bucket]);
    upload_batch(padded_);
    backend_.replay_graph(graph_ids_[bucket]);
    return logits_.view().slice(0, 0, num_logits);
  }
  upload_batch(batch);
  int min_q_len = INT32_MAX, max_q_len = 0;
  for (int s = 0; s < batch.num_seqs(); ++s) {
    const int q_len = batch.qo_indptr[s + 1] - batch.qo_indptr[s];
    min_q_len = std::min(min_q_len, q_len);
    max_q_len = std::max(max_q_len, q_len);
  }
  bool identity = num_logits == n;
  for (int64_t i = 0; identity && i < num_logits; ++i) identity = batch.logits_indices[i] == i;
  run(n, num_logits, identity, kv_arena, layout, min_q_len, max_q_len);
  return logits_.view().slice(0, 0, num_logits);
}

void Transformer::compute_logits(const std::vector<int32_t>& rows, const TensorView& logits) {
  const int64_t num_logits = static_cast<int64_t>(rows.size());
  SIEVE_CHECK_EQ(logits.size(0), num_logits);
  for (int32_t row : rows) SIEVE_CHECK(row >= 0 && row < last_num_tokens_) << "row " << row;
  const TensorView device_rows = upload(rows, rows_, num_logits);
  const TensorView gathered = gathered_.view().slice(0, 0, num_logits);
  backend_.embed(device_rows, normed_.view().slice(0, 0, last_num_tokens_), gathered);
  backend_.gemm(GemmArgs{gathered, weights_.lm_head, {}, logits});
}

}  // namespace sieve::models
