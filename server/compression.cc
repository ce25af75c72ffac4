#include "server/compression.h"

#include <algorithm>
#include <cmath>

namespace sieve::server {

const std::vector<std::string>& compression_methods() {
  static const std::vector<std::string> methods = {"none"};
  return methods;
}

const std::vector<std::string>& kv_formats() {
  static const std::vector<std::string> formats = {"bf16", "f32"};
  return formats;
}

namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

}  // namespace

StatusOr<CompressionSpec> parse_compression(const nlohmann::json& json) {
  if (!json.is_object()) return InvalidArgumentError("compression: must be an object");
  CompressionSpec spec;
  for (const auto& [key, value] : json.items()) {
    if (key == "method") {
      if (!value.is_string()) return InvalidArgumentError("compression.method: must be a string");
      spec.method = value.get<std::string>();
    } else if (key == "budget") {
      if (value.is_null()) continue;
      const bool integral =
          value.is_number_integer() ||
          (value.is_number_float() && std::floor(value.get<double>()) == value.get<double>());
      if (!integral) return InvalidArgumentError("compression.budget: must be an integer");
      const double budget = value.get<double>();
      if (budget < 1 || budget > 1e9) {
        return InvalidArgumentError("compression.budget: must be in [1, 1e9], got " + value.dump());
      }
      spec.budget = static_cast<int>(budget);
    } else if (key == "keep_ratio") {
      if (value.is_null()) continue;
      if (!value.is_number())
        return InvalidArgumentError("compression.keep_ratio: must be a number");
      spec.keep_ratio = value.get<double>();
    } else if (key == "kv_format") {
      if (value.is_null()) continue;
      if (!value.is_string()) {
        return InvalidArgumentError("compression.kv_format: must be a string");
      }
      spec.kv_format = value.get<std::string>();
    } else if (key == "params") {
      if (value.is_null()) continue;
      if (!value.is_object()) return InvalidArgumentError("compression.params: must be an object");
      spec.params = value;
    } else {
      return InvalidArgumentError("compression." + key + ": unknown field (expected method, " +
                                  "budget, keep_ratio, kv_format or params)");
    }
  }
  RETURN_IF_ERROR(validate_compression(spec));
  return spec;
}

Status validate_compression(const CompressionSpec& spec) {
  if (!contains(compression_methods(), spec.method)) {
    return InvalidArgumentError("compression.method: unknown method '" + spec.method +
                                "' (registered: " + join(compression_methods()) + ")");
  }
  if (spec.budget && *spec.budget < 1) {
    return InvalidArgumentError("compression.budget: must be at least 1, got " +
                                std::to_string(*spec.budget));
  }
  if (spec.keep_ratio && !(*spec.keep_ratio > 0.0 && *spec.keep_ratio <= 1.0)) {
    return InvalidArgumentError("compression.keep_ratio: must be in (0, 1], got " +
                                std::to_string(*spec.keep_ratio));
  }
  if (spec.budget && spec.keep_ratio) {
    return InvalidArgumentError("compression.budget: give budget or keep_ratio, not both");
  }
  if (spec.method == "none" && (spec.budget || spec.keep_ratio)) {
    return InvalidArgumentError(std::string("compression.") +
                                (spec.budget ? "budget" : "keep_ratio") +
                                ": method 'none' keeps the full cache and takes no budget");
  }
  if (!contains(kv_formats(), spec.kv_format)) {
    return InvalidArgumentError("compression.kv_format: unknown format '" + spec.kv_format +
                                "' (supported: " + join(kv_formats()) + ")");
  }
  if (!spec.params.is_object())
    return InvalidArgumentError("compression.params: must be an object");
  // Each method validates its own parameters; "none" has none.
  if (spec.method == "none" && !spec.params.empty()) {
    return InvalidArgumentError("compression.params." + spec.params.begin().key() +
                                ": unknown parameter for method 'none'");
  }
  return OkStatus();
}

}  // namespace sieve::server
