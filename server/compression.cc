#include "server/compression.h"

#include "kvcache/policies/registry.h"

namespace sieve::server {

std::vector<std::string> compression_methods() {
  std::vector<std::string> out;
  for (std::string_view name : kvcache::compression_method_names()) out.emplace_back(name);
  return out;
}

const std::vector<std::string>& kv_formats() { return kvcache::kv_formats(); }

StatusOr<CompressionSpec> parse_compression_flag(const std::string& flag, const std::string& text) {
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return InvalidArgumentError(flag + ": not valid JSON");
  auto spec = parse_compression(json);
  if (!spec.ok()) return InvalidArgumentError(flag + ": " + std::string(spec.status().message()));
  return spec;
}

std::shared_ptr<const CompressionSpec> engine_compression(const CompressionSpec& spec) {
  if (!spec.compresses()) return nullptr;
  return std::make_shared<const CompressionSpec>(spec);
}

}  // namespace sieve::server
