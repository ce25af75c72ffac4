#include "kvcache/prefix_cache.h"

#include <bit>

#include "core/check.h"

namespace sieve::kvcache {
namespace {

// MurmurHash3 x64-128 (Appleby, public domain) over a stream of 64-bit words. Written here
// because the libraries at hand (absl, std) only give 64-bit hashes.
class Hasher128 {
 public:
  void add(uint64_t word) {
    block_[num_pending_++] = word;
    if (num_pending_ == 2) flush();
    ++num_words_;
  }
  PageHash finish() {
    if (num_pending_ == 1) add(0);
    const uint64_t length = num_words_ * 8;
    h1_ ^= length;
    h2_ ^= length;
    h1_ += h2_;
    h2_ += h1_;
    h1_ = fmix64(h1_);
    h2_ = fmix64(h2_);
    h1_ += h2_;
    h2_ += h1_;
    return PageHash{h1_, h2_};
  }

 private:
  static constexpr uint64_t kC1 = 0x87c37b91114253d5ull;
  static constexpr uint64_t kC2 = 0x4cf5ad432745937full;

  static uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
  }

  void flush() {
    uint64_t k1 = block_[0] * kC1;
    k1 = std::rotl(k1, 31) * kC2;
    h1_ ^= k1;
    h1_ = (std::rotl(h1_, 27) + h2_) * 5 + 0x52dce729;
    uint64_t k2 = block_[1] * kC2;
    k2 = std::rotl(k2, 33) * kC1;
    h2_ ^= k2;
    h2_ = (std::rotl(h2_, 31) + h1_) * 5 + 0x38495ab5;
    num_pending_ = 0;
  }

  uint64_t h1_ = 0x5eed5eed5eed5eedull;
  uint64_t h2_ = 0x0123456789abcdefull;
  uint64_t block_[2] = {0, 0};
  int num_pending_ = 0;
  uint64_t num_words_ = 0;
};

void add_bytes(Hasher128& hasher, std::string_view bytes) {
  hasher.add(bytes.size());
  uint64_t word = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    word |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * (i % 8));
    if (i % 8 == 7) {
      hasher.add(word);
      word = 0;
    }
  }
  if (bytes.size() % 8 != 0) hasher.add(word);
}

}  // namespace

PageHash PrefixCache::namespace_hash(std::string_view model_id, std::string_view kv_format_name) {
  Hasher128 hasher;
  add_bytes(hasher, model_id);
  add_bytes(hasher, kv_format_name);
  return hasher.finish();
}

PageHash PrefixCache::chain_hash(const PageHash& prev, std::span<const int32_t> token_ids) {
  Hasher128 hasher;
  hasher.add(prev.hi);
  hasher.add(prev.lo);
  hasher.add(token_ids.size());
  for (size_t i = 0; i < token_ids.size(); i += 2) {
    const uint64_t low = static_cast<uint32_t>(token_ids[i]);
    const uint64_t high = i + 1 < token_ids.size() ? static_cast<uint32_t>(token_ids[i + 1]) : 0;
    hasher.add(low | high << 32);
  }
  return hasher.finish();
}

PrefixCache::PrefixCache(PagePool& pool, bool enabled)
    : pool_(pool), enabled_(enabled), page_hashes_(pool.num_pages()) {}

std::optional<PageId> PrefixCache::find(const PageHash& hash) const {
  const auto it = pages_.find(hash);
  if (it == pages_.end()) return std::nullopt;
  return it->second;
}

bool PrefixCache::insert(const PageHash& hash, PageId page) {
  if (!enabled_ || page_hashes_.at(page).has_value()) return false;
  SIEVE_CHECK_GT(pool_.ref_count(page), 0) << "publishing unreferenced page " << page;
  if (!pages_.emplace(hash, page).second) return false;
  page_hashes_[page] = hash;
  pool_.set_cached(page, true);
  return true;
}

void PrefixCache::erase_page(PageId page) {
  std::optional<PageHash>& hash = page_hashes_.at(page);
  if (!hash.has_value()) return;
  const size_t num_erased = pages_.erase(*hash);
  SIEVE_CHECK_EQ(num_erased, 1u) << "page " << page << " was not in the hash map";
  hash.reset();
  pool_.set_cached(page, false);
}

void PrefixCache::record_lookup(int num_query_tokens, int num_hit_tokens) {
  ++stats_.num_queries;
  if (num_hit_tokens > 0) ++stats_.num_hit_queries;
  stats_.num_query_tokens += num_query_tokens;
  stats_.num_hit_tokens += num_hit_tokens;
}

}  // namespace sieve::kvcache
