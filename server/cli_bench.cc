#include "server/cli_bench.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <vector>

#include "models/model_loader.h"
#include "nlohmann/json.hpp"
#include "server/cli_common.h"
#include "server/compression.h"
#include "spdlog/spdlog.h"

namespace sieve::server {
namespace {

struct ThroughputOptions {
  ModelOptions model;
  int num_prompts = 100;
  int input_len = 128;
  int output_len = 128;
  uint64_t seed = 0;
  std::string compression;  // JSON, every request's `compression`
  bool json = false;
};

void progress(int done, int total, double elapsed_s) {
  const int width = 40;
  const int filled = total ? width * done / total : width;
  std::fprintf(stderr, "\r[%.*s%*s] %d/%d requests, %.1f s", filled,
               "########################################", width - filled, "", done, total,
               elapsed_s);
  std::fflush(stderr);
}

Status run_throughput(const ThroughputOptions& o) {
  if (o.num_prompts < 1 || o.input_len < 1 || o.output_len < 1) {
    return InvalidArgumentError("--num-prompts, --input-len and --output-len must be positive");
  }
  ModelOptions model_options = o.model;
  ASSIGN_OR_RETURN(LoadedRunner runner, load_runner(model_options));
  const int64_t per_request = o.input_len + o.output_len;
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                   make_engine(runner, nullptr, model_options,
                               per_request * std::min(o.num_prompts, model_options.max_num_seqs)));
  std::shared_ptr<const kvcache::CompressionSpec> compression;
  if (!o.compression.empty()) {
    ASSIGN_OR_RETURN(const CompressionSpec spec,
                     parse_compression_flag("--compression", o.compression));
    compression = engine_compression(spec);
  }
  // Random prompts, as vLLM's random dataset: ids uniform over the vocabulary.
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> token(0, runner.files.config.vocab_size - 1);
  std::vector<std::shared_ptr<engine::OutputStream>> streams;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < o.num_prompts; ++i) {
    engine::Request request;
    for (int t = 0; t < o.input_len; ++t) request.prompt_token_ids.push_back(token(rng));
    request.params.temperature = 0;
    request.params.max_tokens = o.output_len;
    request.params.ignore_eos = true;  // every request generates output_len tokens
    request.compression = compression;
    ASSIGN_OR_RETURN(auto stream, engine->add_request(std::move(request)));
    streams.push_back(std::move(stream));
  }
  const bool show_progress = isatty(STDERR_FILENO);
  int64_t output_tokens = 0;
  int finished = 0;
  // Decode steps (no prompt token in them): their wall times and tokens, for the step time at a
  // batch size and context.
  std::vector<double> decode_ms;
  int64_t decode_tokens = 0, max_batch = 0;
  while (finished < o.num_prompts) {
    const int64_t prompt_before = engine->stats().prompt_tokens.load();
    const int64_t generated_before = engine->stats().generation_tokens.load();
    const auto step_start = std::chrono::steady_clock::now();
    engine->step();
    const double step_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - step_start)
            .count();
    const int64_t generated = engine->stats().generation_tokens.load() - generated_before;
    if (engine->stats().prompt_tokens.load() == prompt_before && generated > 0) {
      decode_ms.push_back(step_ms);
      decode_tokens += generated;
      max_batch = std::max(max_batch, generated);
    }
    for (auto& stream : streams) {
      while (auto out = stream->next(std::chrono::milliseconds(0))) {
        output_tokens += static_cast<int64_t>(out->token_ids.size());
        if (out->finish_reason == "error") return InternalError(out->error);
        finished += out->finished_request ? 1 : 0;
      }
    }
    if (show_progress) {
      progress(finished, o.num_prompts,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }
  if (show_progress) std::fprintf(stderr, "\n");
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const engine::StepTimer& timer = engine->timer();
  const double model_s = timer.seconds(engine::StepPhase::kModel);
  const double attention_s = runner.model->attention_seconds();
  std::vector<double> sorted = decode_ms;
  std::sort(sorted.begin(), sorted.end());
  const double decode_total_ms = std::accumulate(sorted.begin(), sorted.end(), 0.0);
  const size_t decode_steps = sorted.size();
  nlohmann::json decode = {
      {"steps", decode_steps},
      {"mean_batch", decode_steps ? static_cast<double>(decode_tokens) / decode_steps : 0.0},
      {"max_batch", max_batch},
      {"mean_ms", decode_steps ? decode_total_ms / decode_steps : 0.0},
      {"p50_ms", decode_steps ? sorted[decode_steps / 2] : 0.0},
      {"p99_ms", decode_steps ? sorted[std::min(decode_steps - 1, decode_steps * 99 / 100)] : 0.0}};
  nlohmann::json out = {
      {"num_prompts", o.num_prompts},
      {"input_len", o.input_len},
      {"output_len", o.output_len},
      {"max_num_seqs", model_options.max_num_seqs},
      {"elapsed_s", elapsed},
      {"requests_per_s", o.num_prompts / elapsed},
      {"output_tokens_per_s", output_tokens / elapsed},
      {"total_tokens_per_s", (output_tokens + int64_t{o.num_prompts} * o.input_len) / elapsed},
      {"peak_kv_pages", engine->stats().peak_kv_pages.load()},
      {"steps", engine->stats().steps.load()},
      {"preemptions", engine->stats().preemptions.load()},
      {"decode_step", decode},
      {"compression",
       {{"spec", o.compression.empty() ? "none" : o.compression},
        {"actions", engine->compression_stats().actions.load()},
        {"evicted_tokens", engine->compression_stats().evicted_tokens.load()},
        {"skipped_actions", engine->compression_stats().skipped_actions.load()},
        {"gather_s", engine->compression_stats().gather_ns.load() * 1e-9},
        {"decide_s", engine->compression_stats().decide_ns.load() * 1e-9},
        {"commit_s", engine->compression_stats().commit_ns.load() * 1e-9},
        {"seconds", timer.seconds(engine::StepPhase::kCompress)}}},
      {"step_split_s",
       {{"model_without_attention", model_s - attention_s},
        {"attention", attention_s},
        {"scheduler", timer.seconds(engine::StepPhase::kSchedule)},
        {"sampling", timer.seconds(engine::StepPhase::kSample)},
        {"detokenization", timer.seconds(engine::StepPhase::kDetokenize)}}},
      {"backend", runner.backend->name()}};
  if (o.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("Throughput: %.2f requests/s, %.1f output tokens/s, %.1f total tokens/s (%.1f s)\n",
                out["requests_per_s"].get<double>(), out["output_tokens_per_s"].get<double>(),
                out["total_tokens_per_s"].get<double>(), elapsed);
  }
  return OkStatus();
}

struct TokenizeBenchOptions {
  std::string model = "default";
  std::string file;
  int repeat = 5;
};

// Encodes the file's text `repeat` times on one thread; reports the best time as MB/s, the
// token count and an FNV-1a hash of the ids (so a reference can check it encoded the same).
Status run_tokenize_bench(const TokenizeBenchOptions& o) {
  std::ifstream in(o.file, std::ios::binary);
  if (!in) return NotFoundError(o.file + ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSIGN_OR_RETURN(std::unique_ptr<models::Tokenizer> tokenizer,
                   models::load_tokenizer_for(o.model));
  if (!tokenizer) return InvalidArgumentError(o.model + ": the model has no tokenizer");
  double best_s = 1e30;
  std::vector<int32_t> ids;
  for (int i = 0; i < std::max(1, o.repeat); ++i) {
    const auto start = std::chrono::steady_clock::now();
    ids = tokenizer->encode(text, /*add_special_tokens=*/false);
    best_s = std::min(
        best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  uint64_t hash = 1469598103934665603ull;
  for (int32_t id : ids) hash = (hash ^ static_cast<uint32_t>(id)) * 1099511628211ull;
  nlohmann::json out = {{"bytes", text.size()},
                        {"num_tokens", ids.size()},
                        {"best_s", best_s},
                        {"mb_per_s", text.size() / best_s / 1e6},
                        {"ids_fnv1a", std::to_string(hash)}};
  std::printf("%s\n", out.dump().c_str());
  return OkStatus();
}

}  // namespace

void register_bench(CLI::App& app, int& exit_code) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto o = std::make_shared<ThroughputOptions>();
  CLI::App* cmd = bench->add_subcommand("throughput", "Offline throughput on random prompts");
  add_model_options(*cmd, o->model);
  cmd->add_option("--num-prompts", o->num_prompts)->capture_default_str();
  cmd->add_option("--input-len", o->input_len)->capture_default_str();
  cmd->add_option("--output-len", o->output_len)->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the random prompts")->capture_default_str();
  cmd->add_option(
      "--compression", o->compression,
      "Every request's KV compression as JSON, e.g. '{\"method\": \"gkv\", \"budget\": 512}'");
  cmd->add_flag("--json", o->json, "Print one JSON object as the last line of stdout");
  cmd->callback([o, &exit_code] {
    const Status status = run_throughput(*o);
    if (!status.ok()) exit_code = report_error(status);
  });

  auto t = std::make_shared<TokenizeBenchOptions>();
  CLI::App* tok = bench->add_subcommand("tokenize", "Single-thread tokenizer throughput on a file");
  tok->add_option("--model", t->model)->capture_default_str();
  tok->add_option("--file", t->file)->required();
  tok->add_option("--repeat", t->repeat)->capture_default_str();
  tok->callback([t, &exit_code] {
    const Status status = run_tokenize_bench(*t);
    if (!status.ok()) exit_code = report_error(status);
  });
}

}  // namespace sieve::server
