// libFuzzer target over the Hugging Face model-directory parsers: the safetensors header and
// config.json. The first input byte picks the parser; the rest is the file. Every error must
// name the source, and nothing may crash.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "models/config.h"
#include "models/safetensors.h"
#include "nlohmann/json.hpp"

namespace {

void require_named(const sieve::Status& status, const std::string& source) {
  if (!status.ok() && status.message().find(source) != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0] % 2;
  auto bytes = std::make_shared<std::string>(reinterpret_cast<const char*>(data + 1), size - 1);
  if (which == 0) {
    const std::string source = "fuzz.safetensors";
    auto map = sieve::models::parse_safetensors(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes->data()), bytes->size()),
        source, bytes);
    require_named(map.status(), source);
    if (map.ok()) {
      // Touch every byte of every tensor: the parser promised they lie inside the input.
      volatile uint8_t sink = 0;
      for (const auto& [name, tensor] : *map) {
        const auto* p = static_cast<const uint8_t*>(tensor.view().raw());
        for (size_t i = 0; i < tensor.nbytes(); ++i) sink = sink ^ p[i];
      }
    }
    return 0;
  }
  const std::string source = "fuzz/config.json";
  const nlohmann::json json = nlohmann::json::parse(*bytes, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  auto config = sieve::models::parse_hf_config(json, source);
  require_named(config.status(), source);
  if (config.ok()) {
    // The config passed validation: RoPE frequencies must be computable for it.
    (void)sieve::models::compute_rope_frequencies(*config, config->context_length());
  }
  return 0;
}
