#include "server/generation_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace sieve::server {

using nlohmann::json;

namespace {

// Reads the keys vLLM reads; others (bos_token_id, do_sample, ...) are ignored in a model's file,
// and refused in an override, where they are most likely a typo.
Status read_keys(const json& config, const std::string& where, bool strict,
                 GenerationDefaults* out) {
  if (!config.is_object()) return InvalidArgumentError(where + ": must be a JSON object");
  for (const auto& [key, value] : config.items()) {
    const bool known = key == "temperature" || key == "top_p" || key == "top_k" ||
                       key == "min_p" || key == "repetition_penalty" || key == "max_new_tokens";
    if (!known) {
      if (strict) {
        return InvalidArgumentError(where + ": unknown key '" + key +
                                    "' (expected temperature, top_p, top_k, min_p, "
                                    "repetition_penalty or max_new_tokens)");
      }
      continue;
    }
    if (value.is_null()) continue;
    if (!value.is_number()) return InvalidArgumentError(where + ": " + key + " must be a number");
    const double number = value.get<double>();
    const bool integral = key == "top_k" || key == "max_new_tokens";
    if (integral && (!value.is_number_integer() || number < INT32_MIN || number > INT32_MAX)) {
      return InvalidArgumentError(where + ": " + key + " must be an integer");
    }
    if (key == "temperature") out->temperature = static_cast<float>(number);
    if (key == "top_p") out->top_p = static_cast<float>(number);
    if (key == "top_k") out->top_k = static_cast<int>(number);
    if (key == "min_p") out->min_p = static_cast<float>(number);
    if (key == "repetition_penalty") out->repetition_penalty = static_cast<float>(number);
    if (key == "max_new_tokens") out->max_tokens = static_cast<int>(number);
  }
  return OkStatus();
}

StatusOr<json> read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return InvalidArgumentError("cannot read " + path.string());
  std::stringstream text;
  text << in.rdbuf();
  json parsed = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return InvalidArgumentError(path.string() + ": not valid JSON");
  return parsed;
}

}  // namespace

bool GenerationDefaults::empty() const {
  return !temperature && !top_p && !top_k && !min_p && !repetition_penalty && !max_tokens;
}

std::string GenerationDefaults::describe() const {
  std::string out;
  auto add = [&out](const char* name, const auto& value) {
    if (value) out += fmt::format("{}{}={}", out.empty() ? "" : ", ", name, *value);
  };
  add("temperature", temperature);
  add("top_p", top_p);
  add("top_k", top_k);
  add("min_p", min_p);
  add("repetition_penalty", repetition_penalty);
  add("max_tokens", max_tokens);
  return out;
}

StatusOr<GenerationDefaults> load_generation_defaults(const std::string& mode,
                                                      const std::string& model_path,
                                                      const std::string& override_json) {
  GenerationDefaults defaults;
  std::filesystem::path dir;
  std::error_code ec;
  if (mode == "auto") {
    if (std::filesystem::is_directory(model_path, ec)) dir = model_path;
  } else if (mode != "vllm") {
    if (!std::filesystem::is_directory(mode, ec)) {
      return InvalidArgumentError("--generation-config: '" + mode +
                                  "' is not auto, vllm or a directory");
    }
    dir = mode;
  }
  if (!dir.empty()) {
    const std::filesystem::path file = dir / "generation_config.json";
    if (std::filesystem::exists(file, ec)) {
      ASSIGN_OR_RETURN(const json config, read_json_file(file));
      RETURN_IF_ERROR(read_keys(config, file.string(), /*strict=*/false, &defaults));
      defaults.source = file.string();
    } else if (mode != "auto") {
      return InvalidArgumentError("--generation-config: no generation_config.json in " + mode);
    }
  }
  if (!override_json.empty()) {
    const json config = json::parse(override_json, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) {
      return InvalidArgumentError("--override-generation-config: not valid JSON");
    }
    RETURN_IF_ERROR(read_keys(config, "--override-generation-config", /*strict=*/true, &defaults));
    defaults.source += std::string(defaults.source.empty() ? "" : " and ") +
                       "--override-generation-config";
  }
  engine::SamplingParams params;
  apply_generation_defaults(defaults, &params);
  params.min_tokens = 0;
  if (Status valid = engine::validate(params); !valid.ok()) {
    return InvalidArgumentError("generation defaults from " + defaults.source + ": " +
                                std::string(valid.message()));
  }
  return defaults;
}

void apply_generation_defaults(const GenerationDefaults& defaults, engine::SamplingParams* p) {
  if (defaults.temperature) p->temperature = *defaults.temperature;
  if (defaults.top_p) p->top_p = *defaults.top_p;
  if (defaults.top_k) p->top_k = *defaults.top_k;
  if (defaults.min_p) p->min_p = *defaults.min_p;
  if (defaults.repetition_penalty) p->repetition_penalty = *defaults.repetition_penalty;
  if (defaults.max_tokens) p->max_tokens = *defaults.max_tokens;
}

}  // namespace sieve::server
