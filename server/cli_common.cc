#include "server/cli_common.h"

#include <cstdio>

#include "models/weights.h"
#include "spdlog/spdlog.h"

namespace sieve::server {

void add_model_options(CLI::App& app, ModelOptions& o) {
  app.add_option("--model", o.model,
                 "Model: a Hugging Face directory, a .gguf file, or 'default' (SmolLM2-135M-"
                 "Instruct)")
      ->capture_default_str();
  app.add_option("--device", o.device, "Backend: auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--load-format", o.load_format,
                 "auto, or dummy: random weights at the shapes of the config --model names")
      ->check(CLI::IsMember({"auto", "dummy"}))
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", o.max_num_batched_tokens,
                 "Most tokens in one step (the prefill chunk size)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-num-seqs", o.max_num_seqs, "Most sequences in one step")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--kv-cache-gib", o.kv_cache_gib,
                 "KV cache size in GiB (0: sized for the workload, or 1 GiB for a server)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                 "Fraction of GPU memory for weights, activations and the KV cache together")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  app.add_flag("--enforce-eager", o.enforce_eager,
               "Run every step eagerly (no CUDA graphs for decode steps)");
  app.add_option("--max-compressing-seqs", o.max_compressing_seqs,
                 "Sequences that may gather queries for their compression policy at once")
      ->capture_default_str();
  app.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o.enable_prefix_caching,
               "Share the KV pages of identical prompt prefixes")
      ->capture_default_str();
  app.add_option("--long-prefill-token-threshold", o.long_prefill_token_threshold,
                 "A prompt longer than this is a long prefill: while other requests wait, it runs "
                 "at most this many tokens a step (0: half of --max-num-batched-tokens)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-num-partial-prefills", o.max_num_partial_prefills,
                 "Most prefills in progress at once")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--max-long-partial-prefills", o.max_long_partial_prefills,
                 "Most long prefills in progress at once (shorter prompts pass waiting long ones)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
}

StatusOr<LoadedRunner> load_runner(const ModelOptions& o) {
  LoadedRunner r;
  const kernels::DevicePreference preference =
      o.device == "cpu"    ? kernels::DevicePreference::kCpu
      : o.device == "cuda" ? kernels::DevicePreference::kCuda
                           : kernels::DevicePreference::kAuto;
  ASSIGN_OR_RETURN(r.backend, kernels::make_backend(preference));
  const models::LoadFormat format =
      o.load_format == "dummy" ? models::LoadFormat::kDummy : models::LoadFormat::kAuto;
  ASSIGN_OR_RETURN(r.files, models::load_model_files(o.model, format));
  models::ModelWeights weights;
  if (format == models::LoadFormat::kDummy) {
    ASSIGN_OR_RETURN(weights, models::random_weights(r.files.config, *r.backend, o.dummy_seed));
  } else {
    ASSIGN_OR_RETURN(weights, models::build_weights(r.files.config, r.files.tensors, *r.backend,
                                                    r.files.source));
  }
  ASSIGN_OR_RETURN(r.model, models::Transformer::create(r.files.config, std::move(weights),
                                                        *r.backend,
                                                        {.max_num_tokens = o.max_num_batched_tokens,
                                                         .max_num_seqs = o.max_num_seqs,
                                                         .max_kv_indices = 1 << 18,
                                                         .max_graph_seqs = o.enforce_eager ? 0 : 256}));
  spdlog::info("loaded {} ({}, {} layers, hidden {}, vocab {}) on {}", r.files.source,
               r.files.config.architecture_name, r.files.config.num_layers,
               r.files.config.hidden_size, r.files.config.vocab_size, r.backend->name());
  return r;
}

StatusOr<std::unique_ptr<engine::Engine>> make_engine(const LoadedRunner& runner,
                                                      const models::Tokenizer* tokenizer,
                                                      const ModelOptions& o,
                                                      int64_t max_tokens_needed) {
  engine::EngineConfig config;
  config.max_num_batched_tokens = o.max_num_batched_tokens;
  config.max_num_seqs = o.max_num_seqs;
  config.enable_prefix_caching = o.enable_prefix_caching;
  config.long_prefill_token_threshold = o.long_prefill_token_threshold;
  config.max_num_partial_prefills = o.max_num_partial_prefills;
  config.max_long_partial_prefills = o.max_long_partial_prefills;
  config.gpu_memory_utilization = o.gpu_memory_utilization;
  config.max_compressing_seqs = o.max_compressing_seqs;
  const models::ModelConfig& c = runner.files.config;
  if (o.kv_cache_gib > 0) {
    config.kv_cache_bytes = static_cast<size_t>(o.kv_cache_gib * (1ull << 30));
  } else if (runner.backend->memory_info()) {
    // A GPU: the engine splits its memory (gpu_memory_utilization).
  } else if (max_tokens_needed > 0) {
    // Pages for the workload at f32 (the larger format), plus one page of slack per sequence.
    config.num_kv_pages = static_cast<int>((max_tokens_needed + config.page_tokens - 1) /
                                               config.page_tokens * 2 +
                                           2 * o.max_num_seqs);
  }
  std::vector<int32_t> eos = c.eos_token_ids;
  if (tokenizer) eos = tokenizer->stop_token_ids();
  return engine::Engine::create(*runner.model, *runner.backend, tokenizer, eos, config);
}

std::string architecture_hint(const models::ModelConfig& config) {
  switch (config.architecture) {
    case models::Architecture::kLlama: return "llama";
    case models::Architecture::kMistral: return "mistral";
    case models::Architecture::kQwen2: return "qwen2";
    case models::Architecture::kQwen3: return "qwen3";
  }
  return "";
}

int report_error(const Status& status) {
  std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace sieve::server
