#include "models/transformer_runner.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "spdlog/spdlog.h"

namespace sieve::models {

TransformerRunner::TransformerRunner(Transformer& model)
    : model_(model), backend_(model.backend()) {}

StatusOr<std::unique_ptr<TransformerRunner>> TransformerRunner::create(Transformer& model) {
  std::unique_ptr<TransformerRunner> runner(new TransformerRunner(model));
  RETURN_IF_ERROR(runner->allocate_inputs());
  return runner;
}

Status TransformerRunner::allocate_inputs() {
  const StepLimits& limits = model_.limits();
  const ModelConfig& c = model_.config();
  const int64_t t = limits.max_num_tokens;
  const int64_t seqs = limits.max_num_seqs;
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
  RETURN_IF_ERROR(alloc_i32(limits.max_kv_indices, kv_indices_));
  if (c.rope_scaling.type == RopeType::kDynamic) {
    const int64_t half = static_cast<int64_t>(compute_rope_frequencies(c).inv_freq.size());
    host_inv_freq_ = Tensor::empty(DType::kF32, {t, half});
    std::fill_n(host_inv_freq_.data<float>(), t * half, 0.0f);  // padding rows of graph steps
    ASSIGN_OR_RETURN(token_inv_freq_, backend_.allocate(DType::kF32, {t, half}));
  }
  return OkStatus();
}

void TransformerRunner::bind_kv_cache(const TensorView& kv_arena,
                                      const kernels::KvCacheLayout& layout) {
  kv_arena_ = kv_arena;
  layout_ = layout;
  // Graphs recorded the old arena's addresses.
  graph_buckets_.clear();
  graph_ids_.clear();
}

TensorView TransformerRunner::upload(const std::vector<int32_t>& host, const Tensor& device_buffer,
                                     int64_t n) {
  SIEVE_CHECK_LE(n, static_cast<int64_t>(host.size()));
  const TensorView in_place(const_cast<int32_t*>(host.data()), DType::kI32, {n});
  if (backend_.memory_is_host()) return in_place;
  SIEVE_CHECK_LE(n, device_buffer.numel()) << "step exceeds the limits set at start-up";
  const TensorView device = device_buffer.view().slice(0, 0, n);
  backend_.copy(device, in_place);
  return device;
}

// Dynamic NTK scaling recomputes the frequencies from the sequence's length (transformers uses
// the longest position in the forward call plus one), so each token gets its sequence's row.
void TransformerRunner::rope_frequencies(const StepBatch& batch) {
  const ModelConfig& c = model_.config();
  const int64_t half = host_inv_freq_.size(1);
  for (int s = 0; s < batch.num_seqs(); ++s) {
    int64_t max_position = 0;
    for (int t = batch.qo_indptr[s]; t < batch.qo_indptr[s + 1]; ++t) {
      max_position = std::max<int64_t>(max_position, batch.positions[t]);
    }
    const int64_t len = batch.rope_lens.empty()
                            ? max_position + 1
                            : std::max<int64_t>(batch.rope_lens[s], max_position + 1);
    const RopeFrequencies f = compute_rope_frequencies(c, len);
    for (int t = batch.qo_indptr[s]; t < batch.qo_indptr[s + 1]; ++t) {
      std::memcpy(host_inv_freq_.data<float>() + t * half, f.inv_freq.data(), half * sizeof(float));
    }
  }
  const TensorView host = host_inv_freq_.view().slice(0, 0, batch.num_tokens());
  inputs_.token_inv_freq = token_inv_freq_.view().slice(0, 0, batch.num_tokens());
  backend_.copy(inputs_.token_inv_freq, host);
}

void TransformerRunner::upload_batch(const StepBatch& batch) {
  StepInputs& in = inputs_;
  const int64_t n = batch.num_tokens();
  in.num_tokens = n;
  in.num_logits = static_cast<int64_t>(batch.logits_indices.size());
  in.token_ids = upload(batch.token_ids, ids_, n);
  in.positions = upload(batch.positions, positions_, n);
  in.slot_mapping = upload(batch.slot_mapping, slots_, n);
  in.qo_indptr = upload(batch.qo_indptr, qo_indptr_, batch.num_seqs() + 1);
  in.kv_indptr = upload(batch.kv_indptr, kv_indptr_, batch.num_seqs() + 1);
  in.kv_indices = upload(batch.kv_indices, kv_indices_, batch.kv_indices.size());
  in.kv_lens = upload(batch.kv_lens, kv_lens_, batch.num_seqs());
  SIEVE_CHECK_EQ(batch.kv_head_lens.empty(), batch.kv_gap_ends.empty());
  in.kv_head_lens = batch.kv_head_lens.empty()
                        ? TensorView()
                        : upload(batch.kv_head_lens, head_lens_, batch.kv_head_lens.size());
  in.kv_gap_ends = batch.kv_gap_ends.empty()
                       ? TensorView()
                       : upload(batch.kv_gap_ends, gap_ends_, batch.num_seqs());
  SIEVE_CHECK(batch.kv_formats.empty() ||
              static_cast<int>(batch.kv_formats.size()) == batch.num_seqs());
  in.kv_formats = batch.kv_formats.empty()
                      ? TensorView()
                      : upload(batch.kv_formats, kv_formats_, batch.num_seqs());
  in.logits_indices = upload(batch.logits_indices, rows_, batch.logits_indices.size());
  SIEVE_CHECK_EQ(batch.capture_rows.size(), batch.capture_slots.size());
  in.capture_rows = batch.capture_rows.empty()
                        ? TensorView()
                        : upload(batch.capture_rows, capture_rows_, batch.capture_rows.size());
  in.capture_slots = batch.capture_rows.empty()
                         ? TensorView()
                         : upload(batch.capture_slots, capture_slots_, batch.capture_slots.size());
  in.moment_rows = batch.moment_rows;
  if (model_.config().rope_scaling.type == RopeType::kDynamic) rope_frequencies(batch);
}

// A decode batch (one token per sequence, every one sampled, no compacted sequence, no query
// statistics, one KV format) takes the smallest bucket that holds it.
int TransformerRunner::graph_bucket(const StepBatch& batch) const {
  if (graph_buckets_.empty()) return -1;
  const int n = batch.num_tokens();
  if (n != batch.num_seqs() || n > graph_buckets_.back() || !batch.kv_head_lens.empty() ||
      !batch.capture_rows.empty() || !batch.moment_rows.empty() || !batch.kv_formats.empty() ||
      static_cast<int>(batch.logits_indices.size()) != n) {
    return -1;
  }
  for (int i = 0; i < n; ++i) {
    if (batch.qo_indptr[i + 1] != i + 1 || batch.logits_indices[i] != i) return -1;
  }
  return static_cast<int>(std::lower_bound(graph_buckets_.begin(), graph_buckets_.end(), n) -
                          graph_buckets_.begin());
}

// Padding sequences own no tokens and no pages; padding tokens write no K/V (slot -1) and
// belong to no sequence, so attention leaves their rows alone; their logits rows are ignored.
void TransformerRunner::pad_decode_batch(const StepBatch& batch, int size) {
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

Status TransformerRunner::warm_up() {
  SIEVE_CHECK(!kv_arena_.empty()) << "warm_up before bind_kv_cache";
  if (backend_.memory_info()) {
    // A stand-in prompt of max_num_tokens tokens over page 0 repeated; no K/V written.
    const auto start = std::chrono::steady_clock::now();
    const int n = model_.limits().max_num_tokens;
    StepBatch batch;
    batch.token_ids.assign(n, 0);
    batch.slot_mapping.assign(n, -1);
    for (int t = 0; t < n; ++t) batch.positions.push_back(t);
    const int pages = (n + layout_.tokens_per_page - 1) / layout_.tokens_per_page;
    batch.qo_indptr = {0, n};
    batch.kv_indptr = {0, pages};
    batch.kv_indices.assign(pages, 0);
    batch.kv_lens = {n};
    batch.logits_indices = {n - 1};
    execute(batch);
    backend_.synchronize();
    spdlog::info("warmed up with a {}-token step in {:.0f} ms", n,
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  return capture_graphs();
}

Status TransformerRunner::capture_graphs() {
  graph_buckets_.clear();
  graph_ids_.clear();
  const StepLimits& limits = model_.limits();
  const int largest = std::min({limits.max_graph_seqs, limits.max_num_seqs, limits.max_num_tokens});
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
    inputs_.logits_rows_are_tokens = true;
    inputs_.min_q_len = inputs_.max_q_len = 1;
    const StepInputs in = inputs_;
    auto body = [&] { model_.forward(in, kv_arena_, layout_); };
    body();  // warm-up: cuBLAS's algorithm choice, lazy module loads
    ASSIGN_OR_RETURN(ids[i], backend_.capture_graph(body));
  }
  backend_.synchronize();
  graph_buckets_ = std::move(buckets);
  graph_ids_ = std::move(ids);
  spdlog::info(
      "captured {} decode graphs (batch sizes 1 to {}) in {:.0f} ms", graph_buckets_.size(),
      graph_buckets_.back(),
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  return OkStatus();
}

TensorView TransformerRunner::execute(const StepBatch& batch) {
  const StepLimits& limits = model_.limits();
  const int64_t n = batch.num_tokens();
  const int64_t num_logits = static_cast<int64_t>(batch.logits_indices.size());
  SIEVE_CHECK(!kv_arena_.empty()) << "execute before bind_kv_cache";
  SIEVE_CHECK(n > 0 && n <= limits.max_num_tokens) << "step of " << n << " tokens";
  SIEVE_CHECK_LE(batch.num_seqs(), limits.max_num_seqs);
  SIEVE_CHECK_LE(num_logits, limits.max_num_seqs);
  for (int32_t row : batch.logits_indices) SIEVE_CHECK(row >= 0 && row < n) << "row " << row;
  last_num_tokens_ = n;
  if (const int bucket = graph_bucket(batch); bucket >= 0) {
    pad_decode_batch(batch, graph_buckets_[bucket]);
    upload_batch(padded_);
    backend_.replay_graph(graph_ids_[bucket]);
    return model_.logits(num_logits);
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
  inputs_.logits_rows_are_tokens = identity;
  inputs_.min_q_len = min_q_len;
  inputs_.max_q_len = max_q_len;
  return model_.forward(inputs_, kv_arena_, layout_);
}

void TransformerRunner::compute_logits(const std::vector<int32_t>& rows, const TensorView& logits) {
  const int64_t num_logits = static_cast<int64_t>(rows.size());
  for (int32_t row : rows) SIEVE_CHECK(row >= 0 && row < last_num_tokens_) << "row " << row;
  model_.compute_logits(upload(rows, rows_, num_logits), last_num_tokens_, logits);
}

}  // namespace sieve::models
