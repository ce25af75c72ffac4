#include "engine/batch_builder.h"

namespace sieve::engine {

models::StepBatch& BatchBuilder::build(const scheduler::SchedulerOutput& out,
                                       const scheduler::Scheduler& scheduler,
                                       const kvcache::KvManager& kv) {
  models::StepBatch& b = batch_;
  b.token_ids.clear();
  b.positions.clear();
  b.qo_indptr.assign(1, 0);
  b.logits_indices.clear();
  b.rope_lens.clear();
  b.kv_head_lens.clear();
  b.kv_gap_ends.clear();
  b.kv_formats.clear();
  b.capture_rows.clear();
  b.capture_slots.clear();
  logits_rows_.assign(out.scheduled.size(), -1);
  std::vector<kvcache::BatchSeq>& tables = tables_;
  tables.clear();
  bool any_compacted = false;
  bool any_other_format = false;
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const scheduler::ScheduledSeq& s = out.scheduled[i];
    const scheduler::Sequence* seq = scheduler.find(s.seq_id);
    SIEVE_CHECK(seq != nullptr) << "scheduled sequence " << s.seq_id << " is gone";
    for (int j = 0; j < s.num_new_tokens; ++j) {
      b.token_ids.push_back(seq->token_ids[s.num_computed_tokens + j]);
      b.positions.push_back(s.num_computed_tokens + j);
    }
    b.qo_indptr.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.rope_lens.push_back(seq->num_tokens());
    tables.push_back({&kv.page_table(s.seq_id), s.num_new_tokens});
    b.kv_formats.push_back(static_cast<int32_t>(seq->kv_format));
    any_other_format = any_other_format || seq->kv_format != layout_.kv_format();
    any_compacted = any_compacted || !kv.head_lengths(s.seq_id).prefix_lens.empty();
    if (s.sample) {
      logits_rows_[i] = static_cast<int>(b.logits_indices.size());
      b.logits_indices.push_back(b.qo_indptr.back() - 1);
    }
  }
  // A batch of the layout's format alone passes no formats (and stays graph-eligible).
  if (!any_other_format) b.kv_formats.clear();
  // Swapped, not moved: both sides keep their capacity for the next step.
  kvcache::BatchPageTables& pt = page_tables_;
  kvcache::build_batch_page_tables(tables, &pt);
  b.kv_indptr.swap(pt.kv_indptr);
  b.kv_indices.swap(pt.kv_indices);
  b.kv_lens.swap(pt.kv_lens);
  b.slot_mapping.swap(pt.slot_mapping);
  if (any_compacted) {
    const int per_seq = layout_.num_layers * layout_.num_kv_heads;
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      const kvcache::HeadLengths h = kv.head_lengths(out.scheduled[i].seq_id);
      if (h.prefix_lens.empty()) {
        b.kv_head_lens.insert(b.kv_head_lens.end(), per_seq, b.kv_lens[i]);
        b.kv_gap_ends.push_back(b.kv_lens[i]);
      } else {
        b.kv_head_lens.insert(b.kv_head_lens.end(), h.prefix_lens.begin(), h.prefix_lens.end());
        b.kv_gap_ends.push_back(h.gap_end);
      }
    }
  }
  return b;
}

}  // namespace sieve::engine
