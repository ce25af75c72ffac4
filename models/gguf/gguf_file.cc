#include "models/gguf/gguf_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

#include "core/check.h"

namespace sieve::models::gguf {

static_assert(std::endian::native == std::endian::little,
              "GGUF parsing assumes a little-endian host");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 16;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
// The fewest bytes a metadata pair and a tensor info can take, to bound counts by the file size.
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

// Bytes of one scalar of `type`, or 0 for strings, arrays and unknown types.
uint64_t scalar_bytes(ValueType type) {
  switch (type) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

bool is_known_value_type(uint32_t type) { return type <= static_cast<uint32_t>(ValueType::kF64); }

bool is_signed(ValueType type) {
  return type == ValueType::kI8 || type == ValueType::kI16 || type == ValueType::kI32 ||
         type == ValueType::kI64;
}

bool is_integer(ValueType type) {
  return is_signed(type) || type == ValueType::kU8 || type == ValueType::kU16 ||
         type == ValueType::kU32 || type == ValueType::kU64;
}

// The signed value of a `bytes`-byte two's complement integer stored zero-extended in `bits`.
int64_t sign_extend(uint64_t bits, uint64_t bytes) {
  const int shift = static_cast<int>(64 - 8 * bytes);
  return static_cast<int64_t>(bits << shift) >> shift;
}

}  // namespace

std::string_view value_type_name(ValueType type) {
  switch (type) {
    case ValueType::kU8:
      return "u8";
    case ValueType::kI8:
      return "i8";
    case ValueType::kU16:
      return "u16";
    case ValueType::kI16:
      return "i16";
    case ValueType::kU32:
      return "u32";
    case ValueType::kI32:
      return "i32";
    case ValueType::kF32:
      return "f32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kU64:
      return "u64";
    case ValueType::kI64:
      return "i64";
    case ValueType::kF64:
      return "f64";
  }
  return "?";
}

// ---- Value ----

std::optional<int64_t> Value::as_int() const {
  if (!is_integer(type_)) return std::nullopt;
  if (is_signed(type_)) return sign_extend(bits_, scalar_bytes(type_));
  if (bits_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return static_cast<int64_t>(bits_);
}

std::optional<uint64_t> Value::as_uint() const {
  if (!is_integer(type_)) return std::nullopt;
  if (!is_signed(type_)) return bits_;
  const int64_t v = sign_extend(bits_, scalar_bytes(type_));
  if (v < 0) return std::nullopt;
  return static_cast<uint64_t>(v);
}

std::optional<double> Value::as_double() const {
  if (type_ == ValueType::kF32) {
    float f;
    const auto b = static_cast<uint32_t>(bits_);
    std::memcpy(&f, &b, sizeof f);
    return f;
  }
  if (type_ == ValueType::kF64) {
    double d;
    std::memcpy(&d, &bits_, sizeof d);
    return d;
  }
  if (is_signed(type_)) return static_cast<double>(*as_int());
  if (is_integer(type_)) return static_cast<double>(bits_);
  return std::nullopt;
}

std::optional<bool> Value::as_bool() const {
  if (type_ != ValueType::kBool) return std::nullopt;
  return bits_ != 0;
}

std::optional<std::string_view> Value::as_string() const {
  if (type_ != ValueType::kString) return std::nullopt;
  return text_;
}

Value Value::element(uint64_t i) const {
  SIEVE_CHECK(is_array() && i < count_) << "i=" << i << " size=" << count_;
  if (element_type_ == ValueType::kArray) return arrays_[i];
  Value v;
  v.type_ = element_type_;
  if (element_type_ == ValueType::kString) {
    v.text_ = strings_[i];
  } else {
    const uint64_t n = scalar_bytes(element_type_);
    std::memcpy(&v.bits_, scalars_ + i * n, n);
  }
  return v;
}

// ---- Parser ----

// Reads one GGUF image front to back; every read checks the bytes left first.
class Parser {
 public:
  Parser(std::span<const std::byte> bytes, std::string source)
      : bytes_(bytes), source_(std::move(source)) {}

  StatusOr<GgufFile> parse() {
    GgufFile file;
    file.path_ = source_;
    RETURN_IF_ERROR(parse_header(&file));
    RETURN_IF_ERROR(parse_metadata(&file));
    RETURN_IF_ERROR(parse_alignment(&file));
    RETURN_IF_ERROR(parse_tensor_infos(&file));
    RETURN_IF_ERROR(place_tensors(&file));
    return file;
  }

 private:
  Status error(const std::string& problem) const {
    return InvalidArgumentError(source_ + ": " + problem);
  }

  uint64_t remaining() const { return bytes_.size() - pos_; }

  Status need(uint64_t n, const std::string& what) const {
    if (n <= remaining()) return OkStatus();
    return error("truncated file: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                 std::to_string(pos_) + ", but the file has " + std::to_string(bytes_.size()));
  }

  template <typename T>
  Status read(T* out, const std::string& what) {
    RETURN_IF_ERROR(need(sizeof(T), what));
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return OkStatus();
  }

  Status read_string(std::string_view* out, const std::string& what) {
    uint64_t length = 0;
    RETURN_IF_ERROR(read(&length, what + " (length)"));
    if (length > remaining()) {
      return error("truncated or corrupt file: absurd length " + std::to_string(length) + " of " +
                   what + " at offset " + std::to_string(pos_ - 8) + ", only " +
                   std::to_string(remaining()) + " bytes are left");
    }
    *out = std::string_view(reinterpret_cast<const char*>(bytes_.data() + pos_), length);
    pos_ += length;
    return OkStatus();
  }

  // A count of items of at least `min_bytes` each must fit in the bytes left.
  Status check_count(uint64_t count, uint64_t min_bytes, const std::string& what) const {
    if (count <= remaining() / min_bytes) return OkStatus();
    return error("truncated or corrupt file: absurd " + what + " " + std::to_string(count) +
                 ", only " + std::to_string(remaining()) + " bytes are left");
  }

  Status read_value_type(ValueType* out, const std::string& what) {
    uint32_t raw = 0;
    RETURN_IF_ERROR(read(&raw, what + " (type)"));
    if (!is_known_value_type(raw)) {
      return error("unknown value type " + std::to_string(raw) + " of " + what);
    }
    *out = static_cast<ValueType>(raw);
    return OkStatus();
  }

  Status read_value(ValueType type, Value* out, const std::string& what, int depth) {
    out->type_ = type;
    if (type == ValueType::kString) return read_string(&out->text_, what);
    if (type != ValueType::kArray) {
      const uint64_t n = scalar_bytes(type);
      RETURN_IF_ERROR(need(n, what));
      std::memcpy(&out->bits_, bytes_.data() + pos_, n);
      pos_ += n;
      return OkStatus();
    }
    if (depth >= kMaxArrayDepth) {
      return error(what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    }
    RETURN_IF_ERROR(read_value_type(&out->element_type_, what + " (element type)"));
    RETURN_IF_ERROR(read(&out->count_, what + " (element count)"));
    const uint64_t count = out->count_;
    if (out->element_type_ == ValueType::kString) {
      RETURN_IF_ERROR(check_count(count, 8, "string count of " + what));
      out->strings_.resize(count);
      for (uint64_t i = 0; i < count; ++i) {
        RETURN_IF_ERROR(read_string(&out->strings_[i], what + " [" + std::to_string(i) + "]"));
      }
      return OkStatus();
    }
    if (out->element_type_ == ValueType::kArray) {
      RETURN_IF_ERROR(check_count(count, 12, "array count of " + what));
      out->arrays_.resize(count);
      for (uint64_t i = 0; i < count; ++i) {
        RETURN_IF_ERROR(read_value(ValueType::kArray, &out->arrays_[i],
                                   what + " [" + std::to_string(i) + "]", depth + 1));
      }
      return OkStatus();
    }
    const uint64_t n = scalar_bytes(out->element_type_);
    RETURN_IF_ERROR(check_count(count, n, "element count of " + what));
    out->scalars_ = bytes_.data() + pos_;
    pos_ += count * n;
    return OkStatus();
  }

  Status parse_header(GgufFile* file) {
    uint32_t magic = 0;
    RETURN_IF_ERROR(read(&magic, "magic"));
    if (magic != kMagic) return error("not a GGUF file (bad magic)");
    RETURN_IF_ERROR(read(&file->version_, "version"));
    if (file->version_ == 0x02000000 || file->version_ == 0x03000000) {
      return error("big-endian GGUF files are not supported");
    }
    if (file->version_ != 2 && file->version_ != 3) {
      return error("unsupported GGUF version " + std::to_string(file->version_) +
                   " (supported: 2, 3)");
    }
    RETURN_IF_ERROR(read(&num_tensors_, "tensor count"));
    RETURN_IF_ERROR(read(&num_metadata_, "metadata count"));
    RETURN_IF_ERROR(check_count(num_tensors_, kMinTensorInfoBytes, "tensor count"));
    return check_count(num_metadata_, kMinKeyValueBytes, "metadata count");
  }

  Status parse_metadata(GgufFile* file) {
    for (uint64_t i = 0; i < num_metadata_; ++i) {
      const std::string what = "metadata key #" + std::to_string(i);
      std::string_view key;
      RETURN_IF_ERROR(read_string(&key, what));
      const std::string value_what = "value of metadata '" + std::string(key) + "'";
      ValueType type;
      RETURN_IF_ERROR(read_value_type(&type, value_what));
      Value value;
      RETURN_IF_ERROR(read_value(type, &value, value_what, 0));
      if (!file->metadata_.emplace(std::string(key), std::move(value)).second) {
        return error("duplicate metadata key '" + std::string(key) + "'");
      }
    }
    return OkStatus();
  }

  Status parse_alignment(GgufFile* file) {
    file->alignment_ = kDefaultAlignment;
    const Value* value = file->find("general.alignment");
    if (value == nullptr) return OkStatus();
    const std::optional<uint64_t> alignment = value->as_uint();
    if (!alignment || *alignment == 0 || !std::has_single_bit(*alignment) ||
        *alignment > (uint64_t{1} << 30)) {
      return error("metadata 'general.alignment' must be a power of two up to 2^30");
    }
    file->alignment_ = *alignment;
    return OkStatus();
  }

  Status parse_tensor_infos(GgufFile* file) {
    file->tensors_.reserve(num_tensors_);  // bounded by the file size in parse_header
    for (uint64_t i = 0; i < num_tensors_; ++i) {
      std::string what = "tensor info #" + std::to_string(i);
      std::string_view name;
      RETURN_IF_ERROR(read_string(&name, what + " (name)"));
      what = "tensor '" + std::string(name) + "'";
      TensorInfo info;
      info.name = std::string(name);
      uint32_t num_dims = 0;
      RETURN_IF_ERROR(read(&num_dims, what + " (dimension count)"));
      if (num_dims > kMaxDims) {
        return error(what + " has " + std::to_string(num_dims) + " dimensions (at most 4)");
      }
      info.numel = 1;
      for (uint32_t d = 0; d < num_dims; ++d) {
        uint64_t dim = 0;
        RETURN_IF_ERROR(read(&dim, what + " (dimension " + std::to_string(d) + ")"));
        if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
            __builtin_mul_overflow(info.numel, static_cast<int64_t>(dim), &info.numel)) {
          return error(what + ": the product of its dimensions overflows int64");
        }
        info.dims.push_back(static_cast<int64_t>(dim));
      }
      uint32_t type_id = 0;
      RETURN_IF_ERROR(read(&type_id, what + " (type)"));
      RETURN_IF_ERROR(read(&info.offset, what + " (offset)"));
      const TypeTraits* traits = find_type_traits(type_id);
      if (traits == nullptr) {
        return error(what + " has unknown tensor type " + std::to_string(type_id));
      }
      info.type = traits->type;
      const int64_t row = info.dims.empty() ? 1 : info.dims[0];
      if (row % traits->block_size != 0) {
        return error(what + ": a row of " + std::to_string(row) + " elements is not a whole " +
                     "number of " + std::string(traits->name) + " blocks of " +
                     std::to_string(traits->block_size));
      }
      int64_t num_bytes = 0;
      if (__builtin_mul_overflow(info.numel / traits->block_size, traits->block_bytes,
                                 &num_bytes)) {
        return error(what + ": its size in bytes overflows int64");
      }
      info.num_bytes = static_cast<uint64_t>(num_bytes);
      if (!file->tensor_index_.emplace(info.name, file->tensors_.size()).second) {
        return error("duplicate tensor name '" + info.name + "'");
      }
      file->tensors_.push_back(std::move(info));
    }
    return OkStatus();
  }

  // Checks every tensor's bytes lie inside the data section and apart from each other.
  Status place_tensors(GgufFile* file) {
    const uint64_t alignment = file->alignment_;
    file->data_offset_ = (pos_ + alignment - 1) / alignment * alignment;
    if (file->tensors_.empty()) return OkStatus();
    if (file->data_offset_ > bytes_.size()) {
      return error("truncated file: the data section starts at offset " +
                   std::to_string(file->data_offset_) + ", past the end of the file (" +
                   std::to_string(bytes_.size()) + " bytes)");
    }
    const uint64_t data_bytes = bytes_.size() - file->data_offset_;
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(file->tensors_.size());
    for (TensorInfo& info : file->tensors_) {
      const std::string what = "tensor '" + info.name + "'";
      if (info.offset % alignment != 0) {
        return error(what + " has offset " + std::to_string(info.offset) +
                     ", not a multiple of the alignment " + std::to_string(alignment));
      }
      if (info.offset > data_bytes || info.num_bytes > data_bytes - info.offset) {
        return error(what +
                     " data out of bounds (truncated file?): " + std::to_string(info.num_bytes) +
                     " bytes at data offset " + std::to_string(info.offset) +
                     ", but the data section has " + std::to_string(data_bytes) + " bytes");
      }
      info.data = bytes_.data() + file->data_offset_ + info.offset;
      if (info.num_bytes > 0) by_offset.push_back(&info);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const TensorInfo& prev = *by_offset[i - 1];
      if (prev.offset + prev.num_bytes > by_offset[i]->offset) {
        return error("tensor '" + prev.name + "' overlaps tensor '" + by_offset[i]->name + "'");
      }
    }
    return OkStatus();
  }

  std::span<const std::byte> bytes_;
  std::string source_;
  uint64_t pos_ = 0;
  uint64_t num_tensors_ = 0;
  uint64_t num_metadata_ = 0;
};

// ---- GgufFile ----

StatusOr<GgufFile> GgufFile::open(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
  ASSIGN_OR_RETURN(GgufFile file, Parser(mapped->bytes(), path).parse());
  file.file_ = std::move(mapped);
  return file;
}

StatusOr<GgufFile> GgufFile::parse(std::span<const std::byte> bytes, const std::string& source) {
  return Parser(bytes, source).parse();
}

const Value* GgufFile::find(std::string_view key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Status GgufFile::key_error(std::string_view key, std::string_view problem) const {
  return InvalidArgumentError(path_ + ": metadata '" + std::string(key) + "' " +
                              std::string(problem));
}

namespace {

std::string type_description(const Value& value) {
  std::string s(value_type_name(value.type()));
  if (value.is_array()) s += " of " + std::string(value_type_name(value.element_type()));
  return s;
}

}  // namespace

StatusOr<const Value*> GgufFile::get_value(std::string_view key) const {
  const Value* value = find(key);
  if (value == nullptr) {
    return NotFoundError(path_ + ": metadata '" + std::string(key) + "' is missing");
  }
  return value;
}

StatusOr<int64_t> GgufFile::get_int(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* value, get_value(key));
  if (const auto v = value->as_int()) return *v;
  return key_error(
      key, "must be an integer that fits in int64 (it is " + type_description(*value) + ")");
}

StatusOr<double> GgufFile::get_double(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* value, get_value(key));
  if (const auto v = value->as_double()) return *v;
  return key_error(key, "must be a number (it is " + type_description(*value) + ")");
}

StatusOr<bool> GgufFile::get_bool(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* value, get_value(key));
  if (const auto v = value->as_bool()) return *v;
  return key_error(key, "must be a bool (it is " + type_description(*value) + ")");
}

StatusOr<std::string> GgufFile::get_string(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* value, get_value(key));
  if (const auto v = value->as_string()) return std::string(*v);
  return key_error(key, "must be a string (it is " + type_description(*value) + ")");
}

StatusOr<const Value*> GgufFile::get_array(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* value, get_value(key));
  if (!value->is_array()) {
    return key_error(key, "must be an array (it is " + type_description(*value) + ")");
  }
  return value;
}

StatusOr<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* array, get_array(key));
  std::vector<int64_t> out;
  out.reserve(array->size());
  for (uint64_t i = 0; i < array->size(); ++i) {
    const auto v = array->element(i).as_int();
    if (!v) {
      return key_error(key,
                       "must be an array of integers (it is " + type_description(*array) + ")");
    }
    out.push_back(*v);
  }
  return out;
}

StatusOr<std::vector<float>> GgufFile::get_float_array(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* array, get_array(key));
  std::vector<float> out;
  out.reserve(array->size());
  for (uint64_t i = 0; i < array->size(); ++i) {
    const auto v = array->element(i).as_double();
    if (!v) {
      return key_error(key, "must be an array of numbers (it is " + type_description(*array) + ")");
    }
    // Out of float's range the conversion is undefined: saturate to infinity as IEEE would.
    const double d = *v;
    const double max = std::numeric_limits<float>::max();
    out.push_back(d > max    ? std::numeric_limits<float>::infinity()
                  : d < -max ? -std::numeric_limits<float>::infinity()
                             : static_cast<float>(d));
  }
  return out;
}

StatusOr<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* array, get_array(key));
  if (array->element_type() != ValueType::kString) {
    return key_error(key, "must be an array of strings (it is " + type_description(*array) + ")");
  }
  std::vector<std::string> out;
  out.reserve(array->size());
  for (uint64_t i = 0; i < array->size(); ++i) out.emplace_back(*array->element(i).as_string());
  return out;
}

}  // namespace sieve::models::gguf
