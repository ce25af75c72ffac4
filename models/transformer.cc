#include "models/transformer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

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
  std::unique_ptr<Transformer> model(new Transformer(config, std::move(weights), backend, limits));
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
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, hidden_));
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, normed_));
  RETURN_IF_ERROR(alloc({t, c.q_dim() + 2 * c.kv_dim()}, qkv_));
  RETURN_IF_ERROR(alloc({t, c.q_dim()}, attn_));
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, proj_));
  RETURN_IF_ERROR(alloc({t, 2 * c.intermediate_size}, gate_up_));
  RETURN_IF_ERROR(alloc({t, c.intermediate_size}, act_));
  RETURN_IF_ERROR(alloc({t, c.hidden_size}, gathered_));
  ASSIGN_OR_RETURN(logits_, backend_.allocate(DType::kF32, {seqs, c.vocab_size}));
  if (const size_t bytes =
          backend_.attention_workspace_bytes(static_cast<int>(seqs), c.num_kv_heads, c.head_dim);
      bytes > 0) {
    ASSIGN_OR_RETURN(attention_workspace_,
                     backend_.allocate(DType::kU8, {static_cast<int64_t>(bytes)}));
  }
  ASSIGN_OR_RETURN(inv_freq_,
                   backend_.allocate(DType::kF32, {static_cast<int64_t>(rope_.inv_freq.size())}));
  backend_.copy(inv_freq_, TensorView(rope_.inv_freq.data(), DType::kF32,
                                      {static_cast<int64_t>(rope_.inv_freq.size())}));
  return OkStatus();
}

void Transformer::attention_block(int layer, const StepInputs& in, const TensorView& kv_arena,
                                  const KvCacheLayout& layout) {
  const int64_t n = in.num_tokens;
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
  const TensorView inv_freq = dynamic ? in.token_inv_freq : inv_freq_.view();
  // Query statistics are of the queries before RoPE (ExpectedAttention rotates them itself).
  for (const StepBatch::MomentRows& m : in.moment_rows) {
    backend_.accumulate_query_moments({q.slice(0, m.begin, m.end), m.moments.select(0, layer)});
  }
  // Rotary dimensions are the first rotary_dim of each head (partial rotary factor).
  backend_.rope_write_kv(RopeArgs{q.slice(2, 0, c.rotary_dim()), k.slice(2, 0, c.rotary_dim()),
                                  in.positions, inv_freq, rope_.attention_scaling},
                         KvWriteArgs{k, v, in.slot_mapping, kv_arena, layout, layer, in.kv_formats,
                                     in.kv_formats.empty() ? TensorView() : in.qo_indptr});
  if (!in.capture_rows.empty()) {
    backend_.copy_rows({query_store_.select(0, layer), in.capture_slots, qkv.slice(1, 0, c.q_dim()),
                        in.capture_rows});
  }
  const TensorView attn = attn_.view().slice(0, 0, n).unflatten(1, c.num_heads, c.head_dim);
  AttentionArgs args;
  args.q = q;
  args.out = attn;
  args.arena = kv_arena;
  args.layout = layout;
  args.layer = layer;
  args.qo_indptr = in.qo_indptr;
  args.kv_indptr = in.kv_indptr;
  args.kv_indices = in.kv_indices;
  args.kv_lens = in.kv_lens;
  args.kv_head_lens = in.kv_head_lens;
  args.kv_gap_ends = in.kv_gap_ends;
  args.kv_formats = in.kv_formats;
  args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  args.min_q_len = in.min_q_len;
  args.max_q_len = in.max_q_len;
  args.workspace = attention_workspace_;
  // Layers after the first see the same batch and, without per-layer lengths, the same plan.
  args.reuse_plan = layer > 0 && in.kv_head_lens.empty();
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

TensorView Transformer::forward(const StepInputs& in, const TensorView& kv_arena,
                                const KvCacheLayout& layout) {
  const ModelConfig& c = config_;
  const int64_t n = in.num_tokens;
  const int64_t num_logits = in.num_logits;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const TensorView hidden = hidden_.view().slice(0, 0, n);
  const TensorView normed = normed_.view().slice(0, 0, n);
  const TensorView proj = proj_.view().slice(0, 0, n);
  backend_.embed(in.token_ids, weights_.embed, hidden);
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& w = weights_.layers[layer];
    // The residual stream lives in `hidden`: add the previous block's output, then normalize.
    if (layer == 0) {
      backend_.rms_norm(normed, hidden, w.input_norm, eps);
    } else {
      backend_.add_rms_norm(normed, hidden, proj, w.input_norm, eps);
    }
    attention_block(layer, in, kv_arena, layout);
    backend_.add_rms_norm(normed, hidden, proj, w.post_norm, eps);
    mlp_block(layer, n);
  }
  backend_.add_rms_norm(normed, hidden, proj, weights_.final_norm, eps);
  const TensorView logits = logits_.view().slice(0, 0, num_logits);
  if (num_logits == 0) return logits;
  // Only the requested rows go through the LM head (gathered first unless they are all rows).
  TensorView rows = normed.slice(0, 0, num_logits);
  if (!in.logits_rows_are_tokens) {
    rows = gathered_.view().slice(0, 0, num_logits);
    backend_.embed(in.logits_indices, normed, rows);
  }
  backend_.gemm(GemmArgs{rows, weights_.lm_head, {}, logits});
  return logits;
}

void Transformer::set_query_store(const TensorView& store) {
  SIEVE_CHECK(store.ndim() == 3 && store.size(0) == config_.num_layers &&
              store.size(2) == config_.q_dim() && store.dtype() == backend_.compute_dtype())
      << "query store " << store.shape_string();
  query_store_ = store;
}

void Transformer::compute_logits(const TensorView& rows, int64_t num_tokens,
                                 const TensorView& logits) {
  const int64_t num_logits = rows.numel();
  SIEVE_CHECK_EQ(logits.size(0), num_logits);
  const TensorView gathered = gathered_.view().slice(0, 0, num_logits);
  backend_.embed(rows, normed_.view().slice(0, 0, num_tokens), gathered);
  backend_.gemm(GemmArgs{gathered, weights_.lm_head, {}, logits});
}

}  // namespace sieve::models
