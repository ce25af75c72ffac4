#pragma once
// The scheduler's decisions as the model runner's input: turns a SchedulerOutput into a
// models::StepBatch (token ids, positions, FlashInfer-style CSR page tables, slot mapping,
// compacted sequences' valid lengths, each sequence's KV format where formats differ, the rows
// that go through the LM head). Its vectors keep their capacity, so a warm step allocates
// nothing. One thread (the engine's) owns it.

#include <vector>

#include "kernels/backend.h"
#include "kvcache/kv_manager.h"
#include "models/step_batch.h"
#include "scheduler/scheduler.h"

namespace sieve::engine {

class BatchBuilder {
 public:
  explicit BatchBuilder(const kernels::KvCacheLayout& layout) : layout_(layout) {}

  // The batch of `out` (sequences in its order), valid until the next build().
  models::StepBatch& build(const scheduler::SchedulerOutput& out,
                           const scheduler::Scheduler& scheduler, const kvcache::KvManager& kv);
  models::StepBatch& batch() { return batch_; }
  // The logits row of each scheduled sequence that samples (in out.scheduled's order), or -1.
  const std::vector<int>& logits_rows() const { return logits_rows_; }

 private:
  kernels::KvCacheLayout layout_;
  models::StepBatch batch_;
  std::vector<int> logits_rows_;
  std::vector<kvcache::BatchSeq> tables_;
  kvcache::BatchPageTables page_tables_;
};

}  // namespace sieve::engine
