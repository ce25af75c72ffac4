#pragma once
// Reads `compression.params`: typed, range-checked fields, each error naming
// `compression.params.<name>`; finish() refuses any name nobody read.

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "nlohmann/json.hpp"

namespace sieve::kvcache {

// INVALID_ARGUMENT "field: why", the field carried as data too (core/field_error.h), so the APIs
// report it (OpenAI's `param`) as it is.
Status field_error(const std::string& field, const std::string& why);

class ParamReader {
 public:
  // `params` is a JSON object and outlives the reader.
  explicit ParamReader(const nlohmann::json& params) : params_(params) {}

  // Each reads the field when present (leaving *out as it is otherwise).
  Status read_int(std::string_view name, int lo, int hi, int* out);
  Status read_double(std::string_view name, double lo, double hi, double* out);
  Status read_bool(std::string_view name, bool* out);
  Status read_choice(std::string_view name, const std::vector<std::string>& choices,
                     std::string* out);
  // The raw field, or null when absent (the caller checks its shape).
  const nlohmann::json* read_raw(std::string_view name);

  // INVALID_ARGUMENT naming the first field no read_* asked for.
  Status finish(std::string_view method) const;
  static std::string field(std::string_view name) {
    return "compression.params." + std::string(name);
  }

 private:
  const nlohmann::json* find(std::string_view name);

  const nlohmann::json& params_;
  std::set<std::string, std::less<>> read_;
};

}  // namespace sieve::kvcache
