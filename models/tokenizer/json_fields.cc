#include "models/tokenizer/json_fields.h"

#include <limits>

namespace sieve::models {

StatusOr<JsonFields::json> JsonFields::parse(std::string_view text) const {
  json value = json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    // Parse again with exceptions only to get nlohmann's message with the byte position.
    try {
      const json unused = json::parse(text);
      (void)unused;
    } catch (const json::exception& e) {
      return InvalidArgumentError(fmt::format("{}: not valid JSON: {}", file_, e.what()));
    }
    return InvalidArgumentError(fmt::format("{}: not valid JSON", file_));
  }
  return value;
}

const JsonFields::json* JsonFields::find(const json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

StatusOr<std::string> JsonFields::string(const json& obj, std::string_view key,
                                         std::string_view path) const {
  const json* value = find(obj, key);
  if (value == nullptr) return error(path, "missing");
  if (!value->is_string())
    return error(path, fmt::format("expected a string, got {}", value->type_name()));
  return value->get<std::string>();
}

StatusOr<bool> JsonFields::boolean(const json& obj, std::string_view key, std::string_view path,
                                   bool fallback) const {
  const json* value = find(obj, key);
  if (value == nullptr) return fallback;
  if (!value->is_boolean())
    return error(path, fmt::format("expected a boolean, got {}", value->type_name()));
  return value->get<bool>();
}

StatusOr<int32_t> JsonFields::id(const json& value, std::string_view path) const {
  if (!value.is_number_integer()) {
    return error(path, fmt::format("expected a token id, got {}", value.type_name()));
  }
  const auto id = value.get<int64_t>();
  if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
    return error(path, fmt::format("token id {} out of range", id));
  }
  return static_cast<int32_t>(id);
}

StatusOr<const JsonFields::json*> JsonFields::object(const json& obj, std::string_view key,
                                                     std::string_view path) const {
  const json* value = find(obj, key);
  if (value == nullptr) return error(path, "missing");
  if (!value->is_object())
    return error(path, fmt::format("expected an object, got {}", value->type_name()));
  return value;
}

StatusOr<const JsonFields::json*> JsonFields::array(const json& obj, std::string_view key,
                                                    std::string_view path) const {
  const json* value = find(obj, key);
  if (value == nullptr) return error(path, "missing");
  if (!value->is_array())
    return error(path, fmt::format("expected an array, got {}", value->type_name()));
  return value;
}

}  // namespace sieve::models
