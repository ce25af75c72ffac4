#pragma once
// The per-request `compression` object of both APIs (DESIGN.md, "APIs"): parsed and validated at
// the front door, so a bad method or parameter is a 400 / INVALID_ARGUMENT naming the field. The
// engine does not apply it yet (a later issue); validation is already the final contract.

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "nlohmann/json.hpp"

namespace sieve::server {

struct CompressionSpec {
  std::string method = "none";       // a registered policy
  std::optional<int> budget;         // KV tokens kept per layer and KV head, on average
  std::optional<double> keep_ratio;  // the same as a fraction of the prompt
  std::string kv_format = "bf16";
  nlohmann::json params = nlohmann::json::object();  // the policy's own parameters
};

// Policy names the server accepts. TODO(issue 7+): read kvcache/policies/registry once it lands;
// until then only "none" (the full cache) exists.
const std::vector<std::string>& compression_methods();
// KV formats a request may ask for today.
const std::vector<std::string>& kv_formats();

// Parses the JSON object (errors name "compression.<field>"); checks it as validate() does.
StatusOr<CompressionSpec> parse_compression(const nlohmann::json& json);
// Checks the method is registered, budget >= 1, keep_ratio in (0, 1], not both, a known
// kv_format, and the method's parameters.
Status validate_compression(const CompressionSpec& spec);

}  // namespace sieve::server
