#pragma once
// Hugging Face safetensors: an 8-byte little-endian header length, a JSON header mapping tensor
// names to {dtype, shape, data_offsets}, then the data. Tensors are views into the memory-mapped
// file (read-only memory: never write through them), kept alive by the mapping.

#include <cstddef>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"
#include "core/tensor.h"

namespace sieve::models {

using TensorMap = std::map<std::string, Tensor>;

// Parses a safetensors image in `bytes` (kept alive by `owner`). Every error names `source` and
// the problem (truncated header, malformed JSON, bad dtype, data out of bounds, ...).
StatusOr<TensorMap> parse_safetensors(std::span<const std::byte> bytes, const std::string& source,
                                      std::shared_ptr<const void> owner);

// Maps and parses one file.
StatusOr<TensorMap> load_safetensors_file(const std::string& path);

// All tensors of a model directory: model.safetensors, or the shards an index file
// (model.safetensors.index.json) names; tensors never appear twice.
StatusOr<TensorMap> load_safetensors_dir(const std::string& dir);

}  // namespace sieve::models
