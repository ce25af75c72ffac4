#pragma once
// Driving an Engine synchronously in tests: build one over a model runner (or a Transformer),
// submit requests, step until nothing is left, and collect what each stream gave per sample.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace sieve::test_support {

// What one sample of a request streamed.
struct SampleResult {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // of `tokens`, when asked
  std::string text;
  std::string finish;  // its finish reason
};

// What one request's stream gave, once it ended.
struct RequestResult {
  std::vector<SampleResult> samples;  // by sample index
  std::vector<engine::TokenLogprob> prompt_logprobs;
  std::string finish;  // the reason on the request's last chunk
  std::string error;
  engine::Usage usage;  // final
  bool finished = false;
  const std::vector<int32_t>& tokens() const { return samples.at(0).tokens; }
  // Every sample's tokens, one sample after another.
  std::vector<int32_t> all_tokens() const {
    std::vector<int32_t> out;
    for (const SampleResult& s : samples) out.insert(out.end(), s.tokens.begin(), s.tokens.end());
    return out;
  }
};

// An engine whose step limits are the runner's (and a 32 MiB KV cache unless `config` sizes it).
template <typename Runner>
std::unique_ptr<engine::Engine> make_engine(Runner& runner, kernels::Backend& backend,
                                            engine::EngineConfig config = {},
                                            std::vector<int32_t> eos = {}) {
  config.max_num_batched_tokens = runner.limits().max_num_tokens;
  config.max_num_seqs = runner.limits().max_num_seqs;
  if (config.num_kv_pages == 0 && config.kv_cache_bytes == 0) config.kv_cache_bytes = 32 << 20;
  auto engine = engine::Engine::create(runner, backend, nullptr, std::move(eos), config);
  SIEVE_CHECK(engine.ok()) << engine.status();
  return *std::move(engine);
}

inline engine::Request greedy_request(const std::vector<int32_t>& prompt, int max_tokens) {
  engine::Request r;
  r.prompt_token_ids = prompt;
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

inline std::shared_ptr<engine::OutputStream> submit(engine::Engine& engine, engine::Request r) {
  auto stream = engine.add_request(std::move(r));
  SIEVE_CHECK(stream.ok()) << stream.status();
  return *std::move(stream);
}

// Everything queued on `stream` so far.
inline void drain(engine::OutputStream& stream, RequestResult& result) {
  while (auto out = stream.next(std::chrono::milliseconds(0))) {
    if (result.samples.size() <= static_cast<size_t>(out->index)) {
      result.samples.resize(out->index + 1);
    }
    SampleResult& s = result.samples[out->index];
    s.tokens.insert(s.tokens.end(), out->token_ids.begin(), out->token_ids.end());
    for (const engine::TokenLogprob& lp : out->logprobs) s.logprobs.push_back(lp.logprob);
    s.text += out->text;
    if (!out->prompt_logprobs.empty()) result.prompt_logprobs = out->prompt_logprobs;
    if (out->finish_reason) s.finish = *out->finish_reason;
    if (out->finished_request) {
      result.finished = true;
      result.finish = out->finish_reason.value_or("");
      result.error = out->error;
      result.usage = out->usage;
    }
  }
}

// Steps the engine until it has no work left (bounded), then collects each stream.
inline std::vector<RequestResult> run_to_end(
    engine::Engine& engine, const std::vector<std::shared_ptr<engine::OutputStream>>& streams) {
  int guard = 0;
  while (engine.has_work() && ++guard < 100000) engine.step();
  SIEVE_CHECK(!engine.has_work()) << "the engine still has work after 100000 steps";
  std::vector<RequestResult> results(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) drain(*streams[i], results[i]);
  return results;
}

// Submits the requests together and runs them to the end.
inline std::vector<RequestResult> run_requests(engine::Engine& engine,
                                               const std::vector<engine::Request>& requests) {
  std::vector<std::shared_ptr<engine::OutputStream>> streams;
  for (const engine::Request& r : requests) streams.push_back(submit(engine, r));
  return run_to_end(engine, streams);
}

}  // namespace sieve::test_support
