#pragma once
// The GGUF container (versions 2 and 3, little-endian): header, metadata key/values, tensor infos
// and the aligned data section, parsed from a memory-mapped file or from bytes in memory. Parsing
// validates everything it reads — every count is bounded by the bytes left before anything is
// allocated for it — and a malformed file is one InvalidArgument error that starts with the
// file's path and names the problem. Strings, numeric arrays and tensor data point into the
// file's bytes: nothing is copied.
//
// Specification: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/mapped_file.h"
#include "core/status.h"
#include "models/gguf/quant.h"

namespace sieve::models::gguf {

// Metadata value types as GGUF stores them.
enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

std::string_view value_type_name(ValueType type);

// One metadata value: a scalar, a string, or an array (of scalars, strings or arrays). Valid while
// the GgufFile's bytes are.
class Value {
 public:
  ValueType type() const { return type_; }
  bool is_array() const { return type_ == ValueType::kArray; }
  // Scalars: the value if it is an integer type (bool excluded) that fits in int64 / uint64.
  std::optional<int64_t> as_int() const;
  std::optional<uint64_t> as_uint() const;
  // f32 / f64 (and integers, converted); nullopt for other types.
  std::optional<double> as_double() const;
  std::optional<bool> as_bool() const;
  std::optional<std::string_view> as_string() const;

  // Arrays: the element type, the number of elements and element `i` (i < size()).
  ValueType element_type() const { return element_type_; }
  uint64_t size() const { return count_; }
  Value element(uint64_t i) const;

 private:
  friend class Parser;

  ValueType type_ = ValueType::kU8;
  uint64_t bits_ = 0;      // scalars: the value's bytes, zero-extended
  std::string_view text_;  // kString
  ValueType element_type_ = ValueType::kU8;
  uint64_t count_ = 0;
  const std::byte* scalars_ = nullptr;  // arrays of scalars: count_ packed elements
  std::vector<std::string_view> strings_;
  std::vector<Value> arrays_;
};

// One tensor: its name, type, dims in ggml order (dims[0] varies fastest, so a matrix of
// `out` rows of `in` elements has dims {in, out}) and its bytes in the data section.
struct TensorInfo {
  std::string name;
  GgmlType type;
  std::vector<int64_t> dims;
  int64_t numel = 0;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t num_bytes = 0;
  const std::byte* data = nullptr;
};

class GgufFile {
 public:
  // Maps and parses the file at `path`.
  static StatusOr<GgufFile> open(const std::string& path);
  // Parses `bytes`, which must outlive the result; `source` names them in errors.
  static StatusOr<GgufFile> parse(std::span<const std::byte> bytes, const std::string& source);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Offset of the data section from the start of the file.
  uint64_t data_offset() const { return data_offset_; }
  // The mapping (null for parse()).
  const std::shared_ptr<MappedFile>& file() const { return file_; }

  const std::map<std::string, Value, std::less<>>& metadata() const { return metadata_; }
  // The value of `key`, or nullptr.
  const Value* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters: NotFound when the key is missing, InvalidArgument when its value has another
  // type or does not fit; both messages name the file and the key.
  StatusOr<int64_t> get_int(std::string_view key) const;
  StatusOr<double> get_double(std::string_view key) const;
  StatusOr<bool> get_bool(std::string_view key) const;
  StatusOr<std::string> get_string(std::string_view key) const;
  StatusOr<std::vector<int64_t>> get_int_array(std::string_view key) const;
  StatusOr<std::vector<float>> get_float_array(std::string_view key) const;
  StatusOr<std::vector<std::string>> get_string_array(std::string_view key) const;

  // Tensors in file order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr.
  const TensorInfo* find_tensor(std::string_view name) const;

 private:
  friend class Parser;
  GgufFile() = default;

  Status key_error(std::string_view key, std::string_view problem) const;
  StatusOr<const Value*> get_value(std::string_view key) const;
  StatusOr<const Value*> get_array(std::string_view key) const;

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, Value, std::less<>> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace sieve::models::gguf
