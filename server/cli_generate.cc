#include "server/cli_generate.h"

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "engine/single_sequence.h"
#include "nlohmann/json.hpp"
#include "server/cli_common.h"
#include "spdlog/spdlog.h"

namespace sieve::server {
namespace {

struct GenerateOptions {
  ModelOptions model;
  std::string prompt;
  std::string prompt_token_ids;
  engine::SamplingParams sampling;
  std::optional<uint64_t> seed;
  bool json = false;
};

StatusOr<std::vector<int32_t>> parse_token_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    while (used < item.size() && std::isspace(static_cast<unsigned char>(item[used]))) ++used;
    if (item.empty() || used != item.size() || value < INT32_MIN || value > INT32_MAX) {
      return InvalidArgumentError("--prompt-token-ids: '" + item + "' is not a token id");
    }
    ids.push_back(static_cast<int32_t>(value));
  }
  if (ids.empty()) return InvalidArgumentError("--prompt-token-ids: no token ids given");
  return ids;
}

Status run_generate(const GenerateOptions& o) {
  engine::SamplingParams params = o.sampling;
  params.seed = o.seed;
  RETURN_IF_ERROR(engine::validate(params));
  std::vector<int32_t> prompt;
  if (!o.prompt_token_ids.empty()) {
    ASSIGN_OR_RETURN(prompt, parse_token_ids(o.prompt_token_ids));
  } else {
    return UnimplementedError("--prompt: text prompts need the tokenizer; pass --prompt-token-ids");
  }
  ASSIGN_OR_RETURN(LoadedRunner runner, load_runner(o.model));
  const std::vector<int32_t>& eos = runner.files.config.eos_token_ids;
  auto on_token = [&](int32_t token) {
    if (!o.json) {
      std::printf("%d ", token);
      std::fflush(stdout);
    }
  };
  ASSIGN_OR_RETURN(engine::GenerationResult result,
                   engine::generate_single(*runner.model, *runner.backend, prompt, params, eos,
                                           on_token));
  const double prefill_tps = prompt.size() / std::max(result.prefill_seconds, 1e-9);
  const double decode_tps =
      result.token_ids.size() > 1
          ? (result.token_ids.size() - 1) / std::max(result.decode_seconds, 1e-9)
          : 0.0;
  spdlog::info("prompt {} tokens, {:.1f} tokens/s; generated {} tokens, {:.1f} tokens/s; {}",
               prompt.size(), prefill_tps, result.token_ids.size(), decode_tps,
               result.finish_reason);
  if (o.json) {
    nlohmann::json out = {{"token_ids", result.token_ids},
                          {"text", ""},
                          {"finish_reason", result.finish_reason},
                          {"prompt_tokens", prompt.size()},
                          {"completion_tokens", result.token_ids.size()},
                          {"prefill_tokens_per_s", prefill_tps},
                          {"decode_tokens_per_s", decode_tps}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("\n");
  }
  return OkStatus();
}

}  // namespace

void register_generate(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<GenerateOptions>();
  GenerateOptions& o = *options;
  o.sampling.temperature = 0.0f;  // the CLI is greedy unless asked otherwise
  CLI::App* cmd = app.add_subcommand("generate", "Generate a completion for one prompt");
  add_model_options(*cmd, o.model);
  auto* prompt = cmd->add_option("--prompt", o.prompt, "Prompt text");
  auto* ids = cmd->add_option("--prompt-token-ids", o.prompt_token_ids,
                              "Prompt as comma-separated token ids, e.g. 1,2,3");
  prompt->excludes(ids);
  cmd->add_option("--max-tokens", o.sampling.max_tokens, "Most tokens to generate")
      ->capture_default_str();
  cmd->add_option("--temperature", o.sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", o.sampling.top_p, "Nucleus sampling mass, (0, 1]")
      ->capture_default_str();
  cmd->add_option("--top-k", o.sampling.top_k, "Keep the k most likely tokens; -1 = off")
      ->capture_default_str();
  cmd->add_option("--min-p", o.sampling.min_p, "Drop tokens below min-p times the top one")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Random seed (reproducible sampling)");
  cmd->add_flag("--ignore-eos", o.sampling.ignore_eos, "Do not stop at end-of-sequence tokens");
  cmd->add_flag("--json", o.json, "Print one JSON object as the last line of stdout");
  cmd->callback([options, &exit_code] {
    if (options->prompt.empty() && options->prompt_token_ids.empty()) {
      exit_code = report_error(InvalidArgumentError("give --prompt or --prompt-token-ids"));
      return;
    }
    const Status status = run_generate(*options);
    if (!status.ok()) exit_code = report_error(status);
  });
}

}  // namespace sieve::server
