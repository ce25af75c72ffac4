#include "kvcache/policies/params.h"

#include <algorithm>
#include <cmath>

#include "core/field_error.h"

namespace sieve::kvcache {

Status field_error(const std::string& field, const std::string& why) {
  return InvalidFieldError(field, field + ": " + why);
}

const nlohmann::json* ParamReader::find(std::string_view name) {
  read_.emplace(name);
  const auto it = params_.find(std::string(name));
  if (it == params_.end() || it->is_null()) return nullptr;
  return &*it;
}

Status ParamReader::read_int(std::string_view name, int lo, int hi, int* out) {
  const nlohmann::json* v = find(name);
  if (!v) return OkStatus();
  const bool integral =
      v->is_number_integer() || (v->is_number_float() && std::isfinite(v->get<double>()) &&
                                 std::floor(v->get<double>()) == v->get<double>());
  if (!integral) return field_error(field(name), "must be an integer");
  const double x = v->get<double>();
  if (x < lo || x > hi) {
    return field_error(field(name), "must be in [" + std::to_string(lo) + ", " +
                                        std::to_string(hi) + "], got " + v->dump());
  }
  *out = static_cast<int>(x);
  return OkStatus();
}

Status ParamReader::read_double(std::string_view name, double lo, double hi, double* out) {
  const nlohmann::json* v = find(name);
  if (!v) return OkStatus();
  if (!v->is_number()) return field_error(field(name), "must be a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    return field_error(field(name), "must be in [" + std::to_string(lo) + ", " +
                                        std::to_string(hi) + "], got " + v->dump());
  }
  *out = x;
  return OkStatus();
}

Status ParamReader::read_bool(std::string_view name, bool* out) {
  const nlohmann::json* v = find(name);
  if (!v) return OkStatus();
  if (!v->is_boolean()) return field_error(field(name), "must be true or false");
  *out = v->get<bool>();
  return OkStatus();
}

Status ParamReader::read_choice(std::string_view name, const std::vector<std::string>& choices,
                                std::string* out) {
  const nlohmann::json* v = find(name);
  if (!v) return OkStatus();
  std::string list;
  for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
  if (!v->is_string()) return field_error(field(name), "must be one of " + list);
  const std::string s = v->get<std::string>();
  for (const std::string& c : choices) {
    if (s == c) {
      *out = s;
      return OkStatus();
    }
  }
  return field_error(field(name), "unknown value '" + s + "' (one of " + list + ")");
}

const nlohmann::json* ParamReader::read_raw(std::string_view name) { return find(name); }

Status ParamReader::finish(std::string_view method) const {
  for (const auto& [key, value] : params_.items()) {
    if (!read_.contains(key)) {
      // The name is the client's: shown only when short and printable.
      const bool printable = key.size() <= 64 && std::all_of(key.begin(), key.end(), [](char c) {
                               return c >= 0x20 && c < 0x7f;
                             });
      return field_error(field(printable ? key : "<unprintable name>"),
                         "unknown parameter for method '" + std::string(method) + "'");
    }
  }
  return OkStatus();
}

}  // namespace sieve::kvcache
