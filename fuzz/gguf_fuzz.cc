// libFuzzer target over the GGUF parser and the llama-family mapping. Any bytes either parse or
// fail with an error that names the source; a parsed file's values, typed getters, tensor data and
// model mapping are exercised too, so out-of-bounds pointers or unchecked sizes surface under
// ASan/UBSan.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "models/gguf/gguf_file.h"
#include "models/gguf/gguf_model.h"
#include "models/gguf/quant.h"

namespace {

using sieve::Status;
using sieve::models::gguf::GgufFile;
using sieve::models::gguf::TensorInfo;
using sieve::models::gguf::TypeTraits;
using sieve::models::gguf::Value;

constexpr std::string_view kSource = "fuzz.gguf";

void check_error(const Status& status) {
  SIEVE_CHECK(!status.ok());
  SIEVE_CHECK(std::string(status.message()).rfind(kSource, 0) == 0) << status;
}

// Reads every scalar of `value` and its elements; `budget` bounds the work per input.
void visit(const Value& value, int64_t& budget) {
  if (--budget < 0) return;
  (void)value.as_int();
  (void)value.as_uint();
  (void)value.as_double();
  (void)value.as_bool();
  (void)value.as_string();
  if (!value.is_array()) return;
  for (uint64_t i = 0; i < value.size() && budget > 0; ++i) visit(value.element(i), budget);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const sieve::StatusOr<GgufFile> file = GgufFile::parse(bytes, std::string(kSource));
  if (!file.ok()) {
    check_error(file.status());
    return 0;
  }
  int64_t budget = 100000;
  for (const auto& [key, value] : file->metadata()) {
    visit(value, budget);
    for (const Status& s :
         {file->get_int(key).status(), file->get_double(key).status(), file->get_bool(key).status(),
          file->get_string(key).status(), file->get_int_array(key).status(),
          file->get_float_array(key).status(), file->get_string_array(key).status()}) {
      if (!s.ok()) check_error(s);
    }
  }
  std::vector<float> out;
  for (const TensorInfo& t : file->tensors()) {
    SIEVE_CHECK(t.data >= bytes.data() && t.num_bytes <= size &&
                t.data + t.num_bytes <= bytes.data() + size)
        << t.name;
    const TypeTraits* traits = sieve::models::gguf::find_type_traits(static_cast<uint32_t>(t.type));
    SIEVE_CHECK(traits != nullptr);
    if (traits->dequantize == nullptr || t.numel > (int64_t{1} << 20)) continue;
    SIEVE_CHECK(t.numel / traits->block_size * traits->block_bytes ==
                static_cast<int64_t>(t.num_bytes));
    out.resize(static_cast<size_t>(t.numel));
    SIEVE_CHECK(sieve::models::gguf::dequantize(t.type, t.data, t.numel, out.data()).ok());
  }
  const auto model = sieve::models::gguf::load_gguf_model(*file);
  if (!model.ok()) check_error(model.status());
  return 0;
}
