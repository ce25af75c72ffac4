#include "eval/request.h"

#include "kvcache/policies/registry.h"
#include "nlohmann/json.hpp"

namespace sieve::eval {

const char* protocol_name(Protocol protocol) {
  return protocol == Protocol::kAware ? "aware" : "agnostic";
}

StatusOr<Protocol> parse_protocol(std::string_view name) {
  if (name == "aware") return Protocol::kAware;
  if (name == "agnostic") return Protocol::kAgnostic;
  return InvalidArgumentError("protocol must be aware or agnostic, got \"" + std::string(name) +
                              "\"");
}

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (std::string_view name : kvcache::compression_method_names()) out.emplace_back(name);
    return out;
  }();
  return names;
}

StatusOr<engine::Request> make_request(const TaskPrompt& prompt, const MethodSetting& setting,
                                       int max_tokens) {
  engine::Request request;
  request.prompt_token_ids = prompt.token_ids;
  request.params.temperature = 0;
  request.params.max_tokens = max_tokens;
  request.params.logprobs = kFidelityTopLogprobs;
  request.params.seed = 0;
  if (setting.method == "none") return request;
  if (setting.protocol == Protocol::kAgnostic) {
    return UnimplementedError("agnostic needs the compressed prefix cache (issue 13 part 5)");
  }
  nlohmann::json compression = {{"method", setting.method}};
  if (setting.budget) compression["budget"] = *setting.budget;
  if (setting.keep) compression["keep_ratio"] = *setting.keep;
  ASSIGN_OR_RETURN(const kvcache::CompressionSpec spec, kvcache::parse_compression(compression));
  request.compression = std::make_shared<const kvcache::CompressionSpec>(spec);
  request.system_prompt_tokens = prompt.system_tokens;
  return request;
}

}  // namespace sieve::eval
