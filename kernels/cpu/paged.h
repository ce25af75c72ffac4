#pragma once
// Where a sequence's token slots live in the paged KV arena (kernels/backend.h KvCacheLayout),
// for the CPU ops that read or move them: attention, compaction, compression signals.

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/kv_quant.h"

namespace sieve::kernels::cpu {

// One sequence's slots in the arena, as its format lays them out (`layout` is of that format).
class PagedSlots {
 public:
  // `pages`: the sequence's page table (null when only page_*_offset is used).
  PagedSlots(const std::byte* arena, const KvCacheLayout& layout, const int32_t* pages)
      : arena_(arena),
        format_(&kvcache::kv_format(layout.kv_format())),
        pages_(pages),
        num_pages_(layout.num_pages),
        num_kv_heads_(layout.num_kv_heads),
        head_dim_(layout.head_dim),
        tpp_(layout.tokens_per_page),
        page_bytes_(layout.layer_page_bytes()),
        data_bytes_(format_->data_bytes(layout.head_dim)),
        meta_bytes_(format_->meta_bytes(layout.head_dim)) {}

  const kvcache::KvFormat& format() const { return *format_; }
  int tokens_per_page() const { return tpp_; }
  size_t data_bytes() const { return data_bytes_; }
  size_t meta_bytes() const { return meta_bytes_; }

  // Byte offsets in the arena of (layer, K or V, kv_head, slot)'s elements and scales, the slot
  // numbered in the sequence (through its page table) or in the arena (page * tpp + offset).
  size_t data_offset(int layer, int kv, int kv_head, int64_t slot) const {
    return page_data_offset(layer, pages_[slot / tpp_], kv, kv_head, slot % tpp_);
  }
  size_t meta_offset(int layer, int kv, int kv_head, int64_t slot) const {
    return page_meta_offset(layer, pages_[slot / tpp_], kv, kv_head, slot % tpp_);
  }
  size_t page_data_offset(int layer, int64_t page, int kv, int kv_head, int64_t offset) const {
    return page_base(layer, page) + row(kv, kv_head, offset) * data_bytes_;
  }
  size_t page_meta_offset(int layer, int64_t page, int kv, int kv_head, int64_t offset) const {
    return page_base(layer, page) + 2ull * num_kv_heads_ * tpp_ * data_bytes_ +
           row(kv, kv_head, offset) * meta_bytes_;
  }
  // The slot's vector in f32: in place for f32, else dequantized into `scratch` (head_dim).
  const float* read(int layer, int kv, int kv_head, int64_t slot, float* scratch) const {
    const std::byte* data = arena_ + data_offset(layer, kv, kv_head, slot);
    if (format_->id == kvcache::KvFormatId::kF32) return reinterpret_cast<const float*>(data);
    dequantize_vector(*format_, data, arena_ + meta_offset(layer, kv, kv_head, slot), head_dim_,
                      scratch);
    return scratch;
  }

 private:
  size_t page_base(int layer, int64_t page) const {
    return (static_cast<size_t>(layer) * num_pages_ + page) * page_bytes_;
  }
  size_t row(int kv, int kv_head, int64_t offset) const {
    return (static_cast<size_t>(kv) * num_kv_heads_ + kv_head) * tpp_ + offset;
  }

  const std::byte* arena_;
  const kvcache::KvFormat* format_;
  const int32_t* pages_;
  int num_pages_, num_kv_heads_, head_dim_, tpp_;
  size_t page_bytes_, data_bytes_, meta_bytes_;
};

// Checks that `layout` (of any format) fits `arena` and names a layer of it.
void check_kv_layout(const KvCacheLayout& layout, const TensorView& arena, int layer);

}  // namespace sieve::kernels::cpu
