#include "eval/request.h"

namespace sieve::eval {

const char* protocol_name(Protocol protocol) {
  return protocol == Protocol::kAware ? "aware" : "agnostic";
}

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = {
      "none",  "streaming_llm",      "h2o",     "tova",  "snapkv", "pyramidkv",
      "adakv", "expected_attention", "keydiff", "knorm", "gkv",    "surface_logic",
      "kvzip"};
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
  // TODO(issue 13): set the request's compression spec here ({method, keep_ratio or budget})
  // once engine::Request carries one; for Protocol::kAgnostic, compress
  // prompt.token_ids[0, prompt.context_tokens) through the compressed prefix cache first.
  if (setting.protocol == Protocol::kAgnostic) {
    return UnimplementedError("agnostic needs the compressed prefix cache (issue 13)");
  }
  return UnimplementedError("the engine applies no compression yet (issue 13)");
}

}  // namespace sieve::eval
