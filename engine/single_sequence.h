#pragma once
// Runs one sequence to completion: chunked prefill, then decode, sampling each token. This is
// the foundation's generation loop (`sieve generate`); the batched engine (engine/engine.h) is the
// serving path.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/sampling_params.h"
#include "kernels/backend.h"
#include "models/transformer.h"

namespace sieve::engine {

struct GenerationResult {
  std::vector<int32_t> token_ids;
  std::string finish_reason;  // "stop" (EOS / stop token) or "length"
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Validates the request against the model (ids in vocabulary, prompt and output within the
// context), then generates. `eos_ids` end generation unless params.ignore_eos; `on_token` (may be
// empty) sees each token as it is sampled.
StatusOr<GenerationResult> generate_single(models::Transformer& model, kernels::Backend& backend,
                                           const std::vector<int32_t>& prompt,
                                           const SamplingParams& params,
                                           const std::vector<int32_t>& eos_ids,
                                           const std::function<void(int32_t)>& on_token = {});

}  // namespace sieve::engine
