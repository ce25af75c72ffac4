#include "kvcache/formats.h"

#include <string>

#include "core/check.h"

namespace sieve::kvcache {

int KvFormat::num_scales(int head_dim) const {
  switch (scaling) {
    case KvScaling::kNone:
      return 0;
    case KvScaling::kPerTokenHead:
      return 1;
    case KvScaling::kPerGroup:
      return (head_dim + group_size - 1) / group_size;
  }
  return 0;
}

size_t KvFormat::data_bytes(int head_dim) const {
  SIEVE_CHECK_GT(head_dim, 0);
  return (static_cast<size_t>(head_dim) * bits + 7) / 8;
}

size_t KvFormat::bytes_per_token(int num_layers, int num_kv_heads, int head_dim) const {
  SIEVE_CHECK_GT(num_layers, 0);
  SIEVE_CHECK_GT(num_kv_heads, 0);
  return 2 * static_cast<size_t>(num_layers) * num_kv_heads * bytes_per_token_head(head_dim);
}

const KvFormat& kv_format(KvFormatId id) {
  const auto index = static_cast<size_t>(id);
  SIEVE_CHECK_LT(index, std::size(kKvFormats));
  const KvFormat& format = kKvFormats[index];
  SIEVE_CHECK(format.id == id) << "kKvFormats is not in KvFormatId order at row " << index;
  return format;
}

StatusOr<KvFormatId> parse_kv_format(std::string_view name) {
  std::string known;
  for (const KvFormat& format : kKvFormats) {
    if (format.name == name) return format.id;
    if (!known.empty()) known += ", ";
    known += format.name;
  }
  return InvalidArgumentError("kv_format \"" + std::string(name) +
                              "\" is not a known KV format (known: " + known + ")");
}

int tokens_per_page(size_t page_bytes, KvFormatId format, const KvGeometry& geometry) {
  return static_cast<int>(page_bytes / kv_format(format).bytes_per_token(geometry));
}

}  // namespace sieve::kvcache
