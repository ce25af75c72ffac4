#include "engine/single_sequence.h"

#include <algorithm>
#include <chrono>
#include <random>

namespace sieve::engine {
namespace {

constexpr int kTokensPerPage = 16;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

StatusOr<GenerationResult> generate_single(models::Transformer& model, kernels::Backend& backend,
                                           const std::vector<int32_t>& prompt,
                                           const SamplingParams& params,
                                           const std::vector<int32_t>& eos_ids,
                                           const std::function<void(int32_t)>& on_token) {
  RETURN_IF_ERROR(validate(params));
  const models::ModelConfig& c = model.config();
  if (prompt.empty()) return InvalidArgumentError("prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= c.vocab_size) {
      return InvalidArgumentError("prompt token id " + std::to_string(prompt[i]) + " at position " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(c.vocab_size) + ")");
    }
  }
  const int64_t context = c.context_length();
  if (static_cast<int64_t>(prompt.size()) >= context) {
    return InvalidArgumentError("prompt of " + std::to_string(prompt.size()) +
                                " tokens does not fit the model's context of " +
                                std::to_string(context) + " tokens");
  }
  if (static_cast<int64_t>(prompt.size()) + params.max_tokens > context) {
    return InvalidArgumentError("max_tokens " + std::to_string(params.max_tokens) + " plus the " +
                                std::to_string(prompt.size()) + "-token prompt exceed the " +
                                "model's context of " + std::to_string(context) + " tokens");
  }

  // One sequence owns pages 0..num_pages-1 in order.
  const int total = static_cast<int>(prompt.size()) + params.max_tokens;
  kernels::KvCacheLayout layout{c.num_layers, c.num_kv_heads, c.head_dim, kTokensPerPage,
                                (total + kTokensPerPage - 1) / kTokensPerPage, DType::kF32};
  ASSIGN_OR_RETURN(Tensor arena,
                   backend.allocate(DType::kU8, {static_cast<int64_t>(layout.arena_bytes())}));
  ASSIGN_OR_RETURN(Tensor logits, backend.allocate(DType::kF32, {1, c.vocab_size}));

  models::StepBatch batch;
  auto run = [&](std::span<const int32_t> tokens, int start) {
    const int n = static_cast<int>(tokens.size());
    batch.token_ids.assign(tokens.begin(), tokens.end());
    batch.positions.resize(n);
    batch.slot_mapping.resize(n);
    for (int i = 0; i < n; ++i) batch.positions[i] = batch.slot_mapping[i] = start + i;
    const int kv_len = start + n;
    batch.qo_indptr = {0, n};
    batch.kv_indices.resize((kv_len + kTokensPerPage - 1) / kTokensPerPage);
    for (size_t p = 0; p < batch.kv_indices.size(); ++p) batch.kv_indices[p] = static_cast<int32_t>(p);
    batch.kv_indptr = {0, static_cast<int32_t>(batch.kv_indices.size())};
    batch.kv_lens = {kv_len};
    batch.logits_indices = {n - 1};
    batch.rope_lens = {std::max(kv_len, static_cast<int>(prompt.size()))};
    model.forward(batch, arena, layout, logits);
  };

  const uint64_t seed = params.seed ? *params.seed : std::random_device{}();
  Tensor out_token = Tensor::empty(DType::kI32, {1});
  auto sample = [&](int64_t step) {
    float temperature = params.temperature, top_p = params.top_p, min_p = params.min_p;
    int32_t top_k = params.top_k;
    int64_t seed_value = static_cast<int64_t>(seed), step_value = step;
    kernels::SampleArgs args{logits,
                             TensorView(&temperature, DType::kF32, {1}),
                             TensorView(&top_k, DType::kI32, {1}),
                             TensorView(&top_p, DType::kF32, {1}),
                             TensorView(&min_p, DType::kF32, {1}),
                             TensorView(&seed_value, DType::kI64, {1}),
                             TensorView(&step_value, DType::kI64, {1}),
                             out_token};
    backend.sample(args);
    return out_token.data<int32_t>()[0];
  };

  GenerationResult result;
  auto start = std::chrono::steady_clock::now();
  const int chunk = model.max_num_tokens();
  for (int begin = 0; begin < static_cast<int>(prompt.size()); begin += chunk) {
    const int end = std::min<int>(begin + chunk, static_cast<int>(prompt.size()));
    run(std::span<const int32_t>(prompt).subspan(begin, end - begin), begin);
  }
  result.prefill_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();
  int position = static_cast<int>(prompt.size());
  result.finish_reason = "length";
  for (int step = 0; step < params.max_tokens; ++step) {
    const int32_t token = sample(step);
    result.token_ids.push_back(token);
    if (on_token) on_token(token);
    const bool is_stop =
        std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), token) !=
            params.stop_token_ids.end() ||
        (!params.ignore_eos && std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end());
    if (is_stop && step + 1 >= params.min_tokens) {
      result.finish_reason = "stop";
      break;
    }
    if (step + 1 == params.max_tokens) break;
    const int32_t next[1] = {token};
    run(next, position++);
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace sieve::engine
