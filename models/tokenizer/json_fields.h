#pragma once
// Typed access to the fields of one JSON file, where every error names the file and the field
// ("tokenizer.json: field 'model.merges[3]': expected a string").

#include <fmt/format.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/status.h"

namespace sieve::models {

class JsonFields {
 public:
  using json = nlohmann::json;

  explicit JsonFields(std::string file) : file_(std::move(file)) {}
  const std::string& file() const { return file_; }

  // Parses `text`; a syntax error names the file and nlohmann's position.
  StatusOr<json> parse(std::string_view text) const;

  Status error(std::string_view field, std::string_view what) const {
    return InvalidArgumentError(fmt::format("{}: field '{}': {}", file_, field, what));
  }
  Status unsupported(std::string_view field, std::string_view what) const {
    return UnimplementedError(fmt::format("{}: field '{}': {}", file_, field, what));
  }

  // obj[key], or nullptr when `obj` is no object or the key is absent or null.
  static const json* find(const json& obj, std::string_view key);
  static std::string join(std::string_view path, std::string_view key) {
    return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
  }

  // Required string field `path` (its last component is the key in `obj`).
  StatusOr<std::string> string(const json& obj, std::string_view key, std::string_view path) const;
  StatusOr<bool> boolean(const json& obj, std::string_view key, std::string_view path,
                         bool fallback) const;
  StatusOr<int32_t> id(const json& value, std::string_view path) const;  // 0 <= id < 2^31
  // A required object / array field.
  StatusOr<const json*> object(const json& obj, std::string_view key, std::string_view path) const;
  StatusOr<const json*> array(const json& obj, std::string_view key, std::string_view path) const;

 private:
  std::string file_;
};

}  // namespace sieve::models
