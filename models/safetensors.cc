#include "models/safetensors.h"

#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "core/mapped_file.h"
#include "models/json_file.h"
#include "nlohmann/json.hpp"

namespace sieve::models {
namespace {

using nlohmann::json;

StatusOr<DType> parse_dtype(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  if (name == "U8") return DType::kU8;
  return InvalidArgumentError("unsupported dtype '" + name + "'");
}

StatusOr<Tensor> parse_entry(const std::string& name, const json& entry,
                             std::span<const std::byte> data, const std::string& source,
                             const std::shared_ptr<const void>& owner) {
  const std::string where = source + ": tensor '" + name + "'";
  if (!entry.is_object()) return InvalidArgumentError(where + ": entry is not an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return InvalidArgumentError(where + ": missing or non-string 'dtype'");
  }
  if (shape_it == entry.end() || !shape_it->is_array() ||
      shape_it->size() > static_cast<size_t>(TensorView::kMaxDims)) {
    return InvalidArgumentError(where + ": 'shape' must be a list of at most 4 sizes");
  }
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return InvalidArgumentError(where + ": 'data_offsets' must be two non-negative integers");
  }
  auto dtype = parse_dtype(dtype_it->get<std::string>());
  if (!dtype.ok()) return InvalidArgumentError(where + ": " + std::string(dtype.status().message()));
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  for (const json& dim : *shape_it) {
    if (!dim.is_number_unsigned()) {
      return InvalidArgumentError(where + ": shape holds a non-integer or negative size");
    }
    const uint64_t size = dim.get<uint64_t>();
    if (size > (1ull << 40) || (size != 0 && numel > (1ull << 40) / size)) {
      return InvalidArgumentError(where + ": shape is absurdly large");
    }
    numel *= size;
    shape.push_back(static_cast<int64_t>(size));
  }
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end || end > data.size()) {
    return InvalidArgumentError(where + ": data_offsets [" + std::to_string(begin) + ", " +
                                std::to_string(end) + ") lie outside the " +
                                std::to_string(data.size()) + "-byte data section");
  }
  if (end - begin != numel * dtype_size(*dtype)) {
    return InvalidArgumentError(where + ": data_offsets span " + std::to_string(end - begin) +
                                " bytes, but the shape and dtype need " +
                                std::to_string(numel * dtype_size(*dtype)));
  }
  auto* ptr = const_cast<std::byte*>(data.data() + begin);  // read-only mapping; see header
  if (reinterpret_cast<uintptr_t>(ptr) % dtype_size(*dtype) != 0) {
    // The format does not require aligned data (the header length is free): such a tensor is
    // copied to aligned memory rather than read through a misaligned pointer.
    Tensor copy = Tensor::empty(*dtype, std::span<const int64_t>(shape));
    std::memcpy(copy.view().raw(), ptr, end - begin);
    return copy;
  }
  return Tensor(TensorView(ptr, *dtype, shape), owner);
}

}  // namespace

StatusOr<TensorMap> parse_safetensors(std::span<const std::byte> bytes, const std::string& source,
                                      std::shared_ptr<const void> owner) {
  if (bytes.size() < 8) {
    return InvalidArgumentError(source + ": not a safetensors file (shorter than its 8-byte "
                                "header length)");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  if (header_len > bytes.size() - 8 || header_len > (100u << 20)) {
    return InvalidArgumentError(source + ": header length " + std::to_string(header_len) +
                                " exceeds the file (" + std::to_string(bytes.size()) +
                                " bytes): truncated or not a safetensors file");
  }
  const char* header_text = reinterpret_cast<const char*>(bytes.data() + 8);
  json header = json::parse(header_text, header_text + header_len, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return InvalidArgumentError(source + ": malformed JSON header");
  }
  const std::span<const std::byte> data = bytes.subspan(8 + header_len);
  TensorMap tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    ASSIGN_OR_RETURN(Tensor tensor, parse_entry(name, entry, data, source, owner));
    tensors.emplace(name, std::move(tensor));
  }
  return tensors;
}

StatusOr<TensorMap> load_safetensors_file(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return parse_safetensors(file->bytes(), path, file);
}

StatusOr<TensorMap> load_safetensors_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) return load_safetensors_file(single.string());
  if (!fs::exists(index)) {
    return NotFoundError(dir + ": no model.safetensors or model.safetensors.index.json");
  }
  ASSIGN_OR_RETURN(json obj, read_json_file(index.string()));
  auto map_it = obj.find("weight_map");
  if (map_it == obj.end() || !map_it->is_object()) {
    return InvalidArgumentError(index.string() + ": missing object 'weight_map'");
  }
  std::set<std::string> shards;
  for (const auto& [name, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return InvalidArgumentError(index.string() + ": weight_map['" + name + "'] is not a string");
    }
    const std::string file = shard.get<std::string>();
    if (file.find('/') != std::string::npos || file.find("..") != std::string::npos) {
      return InvalidArgumentError(index.string() + ": shard name '" + file + "' leaves the directory");
    }
    shards.insert(file);
  }
  TensorMap all;
  for (const std::string& shard : shards) {
    ASSIGN_OR_RETURN(TensorMap part, load_safetensors_file((fs::path(dir) / shard).string()));
    for (auto& [name, tensor] : part) {
      if (!all.emplace(name, std::move(tensor)).second) {
        return InvalidArgumentError(dir + ": tensor '" + name + "' appears in two shards");
      }
    }
  }
  return all;
}

}  // namespace sieve::models
