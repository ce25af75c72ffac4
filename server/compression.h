#pragma once
// The `compression` object of both APIs: parsed by kvcache/policies (kvcache::parse_compression,
// one contract for HTTP, gRPC and the CLI). This header gives the server its names for it.

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "kvcache/policies/spec.h"
#include "nlohmann/json.hpp"

namespace sieve::server {

using kvcache::CompressionSpec;
using kvcache::parse_compression;

// "none" and every registered policy, for ModelInfo and /v1/models.
std::vector<std::string> compression_methods();
// KV formats a request may ask for today.
const std::vector<std::string>& kv_formats();

// A command-line flag's JSON (`--compression`, `--kv-compression`); errors start with the flag.
StatusOr<CompressionSpec> parse_compression_flag(const std::string& flag, const std::string& text);

// The engine's form of a parsed spec: null for the full cache.
std::shared_ptr<const CompressionSpec> engine_compression(const CompressionSpec& spec);

}  // namespace sieve::server
