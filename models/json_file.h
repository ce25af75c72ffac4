#pragma once
// Reading a JSON file of a model directory (config.json, the safetensors index): a missing file
// is NOT_FOUND and malformed JSON is INVALID_ARGUMENT, both naming the path.

#include <string>

#include "core/status.h"
#include "nlohmann/json.hpp"

namespace sieve::models {

StatusOr<nlohmann::json> read_json_file(const std::string& path);

}  // namespace sieve::models
