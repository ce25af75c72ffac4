#pragma once
// One sequence's paged KV cache on any backend, for whole-model tests: step() feeds tokens
// (a prompt chunk or one generated token) and returns the last row's logits on the host. Pages
// are used in reverse order, so the page table is never the identity.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"
#include "models/transformer.h"
#include "models/transformer_runner.h"

namespace sieve::test_support {

class PagedSequence {
 public:
  static constexpr int kTokensPerPage = 16;

  // `max_len`: the most tokens the sequence will hold. With a `format`, pages have the bytes of
  // kTokensPerPage bf16 tokens and hold what fits of the format's.
  PagedSequence(models::Transformer& model, kernels::Backend& backend, int max_len,
                std::optional<kvcache::KvFormatId> format = std::nullopt)
      : backend_(backend) {
    const models::ModelConfig& c = model.config();
    layout_ = {c.num_layers,
               c.num_kv_heads,
               c.head_dim,
               kTokensPerPage,
               (max_len + kTokensPerPage - 1) / kTokensPerPage,
               backend.compute_dtype(),
               std::nullopt,
               0};
    if (format) {
      layout_.page_bytes = 2ull * c.num_kv_heads * kTokensPerPage * c.head_dim * 2;
      layout_ = layout_.for_format(*format);
      layout_.num_pages = (max_len + layout_.tokens_per_page - 1) / layout_.tokens_per_page;
    }
    tpp_ = layout_.tokens_per_page;
    arena_ = *backend.allocate(DType::kU8, {static_cast<int64_t>(layout_.arena_bytes())});
    host_logits_ = Tensor::empty(DType::kF32, {1, c.vocab_size});
    for (int p = layout_.num_pages - 1; p >= 0; --p) pages_.push_back(p);
    auto runner = models::TransformerRunner::create(model);
    SIEVE_CHECK(runner.ok()) << runner.status();
    runner_ = *std::move(runner);
    runner_->bind_kv_cache(arena_, layout_);
  }

  // Runs `tokens` at the next positions. `rope_len` is the whole prompt's length while a prompt
  // is fed in chunks (dynamic NTK sees it whole, as transformers does).
  const float* step(const std::vector<int32_t>& tokens, int rope_len = 0) {
    models::StepBatch b;
    const int n = static_cast<int>(tokens.size());
    b.token_ids = tokens;
    for (int i = 0; i < n; ++i) {
      const int pos = len_ + i;
      b.positions.push_back(pos);
      b.slot_mapping.push_back(pages_[pos / tpp_] * tpp_ + pos % tpp_);
    }
    len_ += n;
    b.qo_indptr = {0, n};
    const int num_pages = (len_ + tpp_ - 1) / tpp_;
    b.kv_indices.assign(pages_.begin(), pages_.begin() + num_pages);
    b.kv_indptr = {0, num_pages};
    b.kv_lens = {len_};
    b.logits_indices = {n - 1};
    b.rope_lens = {std::max(rope_len, len_)};
    logits_ = runner_->execute(b);
    backend_.copy(host_logits_, logits_);
    return host_logits_.data<float>();
  }

  // The last step's logits where the backend keeps them.
  const TensorView& device_logits() const { return logits_; }

 private:
  kernels::Backend& backend_;
  std::unique_ptr<models::TransformerRunner> runner_;  // eager steps over arena_
  kernels::KvCacheLayout layout_;
  Tensor arena_, host_logits_;
  TensorView logits_;  // the model's memory
  std::vector<int32_t> pages_;
  int tpp_ = 0;  // tokens per page
  int len_ = 0;
};

}  // namespace sieve::test_support
