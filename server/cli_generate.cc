#include "server/cli_generate.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "engine/engine.h"
#include "server/compression.h"
#include "models/tokenizer/chat_template.h"
#include "nlohmann/json.hpp"
#include "server/cli_common.h"
#include "spdlog/spdlog.h"

namespace sieve::server {
namespace {

struct GenerateOptions {
  ModelOptions model;
  std::string prompt;
  std::string prompt_token_ids;
  bool chat = false;
  std::string system;
  engine::SamplingParams sampling;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::string compression;  // JSON, as the APIs' `compression` object
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

// The prompt's token ids: given, or the text encoded (through the chat template with --chat).
StatusOr<std::vector<int32_t>> prompt_ids(const GenerateOptions& o, const LoadedRunner& runner,
                                          const models::Tokenizer* tokenizer) {
  if (!o.prompt_token_ids.empty()) {
    if (o.chat) return InvalidArgumentError("--chat takes --prompt text, not token ids");
    return parse_token_ids(o.prompt_token_ids);
  }
  if (tokenizer == nullptr) {
    return InvalidArgumentError(runner.files.source +
                                ": the model has no tokenizer; pass --prompt-token-ids");
  }
  if (!o.chat) return tokenizer->encode(o.prompt, /*add_special_tokens=*/true);
  std::vector<models::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  messages.push_back({"user", o.prompt});
  const models::ChatTemplate chat_template =
      models::chat_template_for(*tokenizer, architecture_hint(runner.files.config));
  ASSIGN_OR_RETURN(std::string text,
                   models::apply_chat_template(chat_template, messages, /*add_generation_prompt=*/true));
  SPDLOG_DEBUG("chat prompt: {}", text);
  // The template writes BOS itself where the model wants one.
  return tokenizer->encode(text, /*add_special_tokens=*/false);
}

Status run_generate(const GenerateOptions& o) {
  engine::SamplingParams params = o.sampling;
  params.seed = o.seed;
  params.stop = o.stop;
  RETURN_IF_ERROR(engine::validate(params));
  if (!o.system.empty() && !o.chat) return InvalidArgumentError("--system needs --chat");
  ModelOptions model_options = o.model;
  model_options.max_num_seqs = 1;
  ASSIGN_OR_RETURN(LoadedRunner runner, load_runner(model_options));
  ASSIGN_OR_RETURN(std::unique_ptr<models::Tokenizer> tokenizer,
                   models::load_model_tokenizer(runner.files));
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, prompt_ids(o, runner, tokenizer.get()));
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                   make_engine(runner, tokenizer.get(), model_options,
                               static_cast<int64_t>(prompt.size()) + params.max_tokens));
  engine::Request request{prompt, params, nullptr, 0};
  if (!o.compression.empty()) {
    ASSIGN_OR_RETURN(const CompressionSpec spec,
                     parse_compression_flag("--compression", o.compression));
    request.compression = engine_compression(spec);
  }
  if (o.chat && !o.system.empty() && tokenizer) {
    // The system message's own tokens open the prompt: protected from eviction by default.
    request.system_prompt_tokens = models::system_prompt_length(
        models::chat_template_for(*tokenizer, architecture_hint(runner.files.config)), *tokenizer,
        o.system, prompt);
  }
  ASSIGN_OR_RETURN(std::shared_ptr<engine::OutputStream> stream, engine->add_request(request));

  const auto start = std::chrono::steady_clock::now();
  double first_token_s = 0;
  std::vector<int32_t> tokens;
  std::string text, finish_reason;
  engine::Usage usage;
  while (!stream->done()) {
    engine->step();
    while (auto out = stream->next(std::chrono::milliseconds(0))) {
      if (tokens.empty() && !out->token_ids.empty()) {
        first_token_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      tokens.insert(tokens.end(), out->token_ids.begin(), out->token_ids.end());
      text += out->text;
      if (!o.json) {
        if (tokenizer) {
          std::fputs(out->text.c_str(), stdout);
        } else {
          for (int32_t id : out->token_ids) std::printf("%d ", id);
        }
        std::fflush(stdout);
      }
      if (out->finish_reason) finish_reason = *out->finish_reason;
      if (!out->error.empty()) return InternalError(out->error);
      if (out->finished_request) usage = out->usage;
    }
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double prefill_tps = prompt.size() / std::max(first_token_s, 1e-9);
  const double decode_tps =
      tokens.size() > 1 ? (tokens.size() - 1) / std::max(total_s - first_token_s, 1e-9) : 0.0;
  spdlog::info("prompt {} tokens, {:.1f} tokens/s; generated {} tokens, {:.1f} tokens/s; {}",
               prompt.size(), prefill_tps, tokens.size(), decode_tps, finish_reason);
  if (o.json) {
    nlohmann::json out = {{"token_ids", tokens},
                          {"text", text},
                          {"finish_reason", finish_reason},
                          {"prompt_tokens", usage.prompt_tokens},
                          {"completion_tokens", usage.completion_tokens},
                          {"kv_tokens_kept", usage.kv_tokens_kept},
                          {"kv_bytes", usage.kv_bytes},
                          {"prefill_tokens_per_s", prefill_tps},
                          {"decode_tokens_per_s", decode_tps}};
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
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
  cmd->add_flag("--chat", o.chat, "Format the prompt with the model's chat template");
  cmd->add_option("--system", o.system, "System message (with --chat)");
  cmd->add_option("--stop", o.stop, "Stop string (repeatable)");
  cmd->add_option("--repetition-penalty", o.sampling.repetition_penalty)->capture_default_str();
  cmd->add_option("--compression", o.compression,
                  "KV compression as JSON, e.g. '{\"method\": \"snapkv\", \"keep_ratio\": 0.25}'");
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
