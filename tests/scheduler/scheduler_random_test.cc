// Randomized workloads: requests arrive, a fake model samples random tokens (and sometimes a
// stop), clients abort, and in one scenario the engine compacts caches between steps. The
// scheduler's invariants are checked at every step, and the pages' contents are checked through
// a fake arena: every live sequence's slots must hold exactly its tokens.

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "kvcache/page_table.h"
#include "scheduler/scheduler.h"
#include "tests/kvcache/kv_test_util.h"

namespace sieve::scheduler {
namespace {

using kvcache::KvFormatId;
using kvcache::KvManager;
using kvcache::PageId;
using kvcache::pages_for_tokens;

using kvcache::testing::kNumHeads;
constexpr int kMaxSteps = 20000;

struct Scenario {
  const char* name;
  int num_pages;
  SchedulerConfig config;
  bool prefix_caching = true;
  bool compress = false;  // the engine compacts decoding sequences, StreamingLLM style
};

struct RequestRecord {
  int n = 1;
  int max_tokens = 0;
  int num_prompt_tokens = 0;
  KvFormatId format = KvFormatId::kBF16;
  bool aborted = false;
  bool done = false;  // its last sequence finished
  int num_finished = 0;
};

struct Totals {
  int num_preemptions = 0;
  int num_finished_after_preemption = 0;  // with all their outputs
  int num_forks = 0;
  int num_aborted = 0;
  int num_errors = 0;  // sequences that outgrew the whole pool
  int num_compactions = 0;
};

class Driver {
 public:
  Driver(const Scenario& scenario, uint32_t seed)
      : scenario_(scenario),
        rng_(seed),
        kv_(kvcache::testing::make_manager(scenario.num_pages, scenario.prefix_caching)),
        scheduler_(scenario.config, *kv_),
        arena_(scenario.num_pages, kvcache::testing::kMaxTokensPerPage) {
    for (int s = 0; s < 3; ++s) {
      stems_.emplace_back();
      for (int i = 0; i < 16; ++i) stems_.back().push_back(token());
    }
  }

  Totals run(int num_requests) {
    int idle_steps = 0;
    for (int step = 0; step < kMaxSteps; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      add_requests(num_requests);
      maybe_abort();
      if (num_added_ == num_requests && !scheduler_.has_unfinished()) break;
      const SchedulerOutput out = scheduler_.schedule();
      check_output(out);
      write_and_check_pages(out);
      check_page_ownership();
      maybe_abort();  // while the step runs
      if (out.empty()) {
        // Nothing ran although sequences are queued: a stall.
        if (scheduler_.has_unfinished() && ++idle_steps == 3) {
          ADD_FAILURE() << "the scheduler stalls";
          return totals_;
        }
        continue;
      }
      idle_steps = 0;
      for (const FinishedSeq& f : scheduler_.update(fake_model(out))) on_finished(f);
      check_page_ownership();
      if (scenario_.compress) compact_some();
      if (::testing::Test::HasFailure()) return totals_;
    }
    check_the_end(num_requests);
    return totals_;
  }

 private:
  int32_t token() { return std::uniform_int_distribution<int32_t>(0, 7)(rng_); }
  int random_int(int low, int high) { return std::uniform_int_distribution<int>(low, high)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  void add_requests(int num_requests) {
    while (num_added_ < num_requests && (num_added_ < 4 || chance(0.3))) {
      RequestSpec spec;
      spec.request_id = 1000 + num_added_++;
      const std::vector<int32_t>& stem = stems_[random_int(0, 2)];
      spec.prompt_token_ids.assign(stem.begin(), stem.begin() + random_int(0, 14));
      for (int i = random_int(1, 6); i > 0; --i) spec.prompt_token_ids.push_back(token());
      spec.max_tokens = random_int(1, 16);
      spec.n = chance(0.7) ? 1 : random_int(2, 3);
      spec.kv_format = chance(0.2) ? KvFormatId::kF32 : KvFormatId::kBF16;
      RequestRecord record{spec.n, spec.max_tokens, static_cast<int>(spec.prompt_token_ids.size()),
                           spec.kv_format};
      const StatusOr<SeqId> seq = scheduler_.add_request(std::move(spec));
      ASSERT_TRUE(seq.ok()) << seq.status();
      requests_.emplace(1000 + num_added_ - 1, record);
      seqs_.insert(*seq);
    }
  }

  void maybe_abort() {
    if (requests_.empty() || !chance(0.03)) return;
    auto it = requests_.begin();
    std::advance(it, random_int(0, static_cast<int>(requests_.size()) - 1));
    const bool live = !it->second.done && !it->second.aborted;
    EXPECT_EQ(scheduler_.abort_request(it->first), live) << "request " << it->first;
    if (live) it->second.aborted = true;
  }

  void check_output(const SchedulerOutput& out) {
    int num_tokens = 0;
    bool seen_prefill = false;
    std::set<SeqId> ids;
    for (const ScheduledSeq& s : out.scheduled) {
      num_tokens += s.num_new_tokens;
      EXPECT_GE(s.num_new_tokens, 1);
      EXPECT_TRUE(ids.insert(s.seq_id).second) << "scheduled twice: " << s.seq_id;
      EXPECT_FALSE(seen_prefill && !s.is_prefill_chunk) << "a decode after a prefill chunk";
      seen_prefill = seen_prefill || s.is_prefill_chunk;
      const Sequence* seq = scheduler_.find(s.seq_id);
      ASSERT_NE(seq, nullptr);
      EXPECT_EQ(seq->status, SeqStatus::kRunning);
      EXPECT_EQ(s.num_computed_tokens + s.num_new_tokens, seq->num_computed_tokens);
      EXPECT_EQ(s.sample, seq->num_computed_tokens == seq->num_tokens());
      EXPECT_TRUE(kv_->has_sequence(s.seq_id));
    }
    EXPECT_EQ(num_tokens, out.num_scheduled_tokens);
    EXPECT_LE(num_tokens, scenario_.config.max_num_batched_tokens);
    check_partial_prefills(out);
    EXPECT_LE(scheduler_.num_running(), scenario_.config.max_num_seqs);
    for (const Fork& fork : out.forks) ids.insert(fork.child);
    for (SeqId id : out.preempted) {
      EXPECT_FALSE(ids.contains(id)) << "preempted sequence " << id << " runs in this step";
      const Sequence* seq = scheduler_.find(id);
      ASSERT_NE(seq, nullptr);
      EXPECT_EQ(seq->status, SeqStatus::kPreempted);
      EXPECT_EQ(seq->num_computed_tokens, 0);
      EXPECT_FALSE(kv_->has_sequence(id));
      // Workloads here need at most a handful; far more means a preemption loop.
      EXPECT_LE(seq->num_preemptions, 20) << "sequence " << id << " keeps being preempted";
      slots_.erase(id);
      preempted_.insert(id);
      ++totals_.num_preemptions;
    }
    for (const FinishedSeq& f : out.finished) on_finished(f);
    totals_.num_forks += static_cast<int>(out.forks.size());
    for (const Fork& fork : out.forks) seqs_.insert(fork.child);
  }

  // Prefills the step leaves unfinished stay within max_num_partial_prefills, the long ones
  // within max_long_partial_prefills. (A recompute with one token left decodes it next.)
  void check_partial_prefills(const SchedulerOutput& out) {
    const SchedulerConfig& c = scenario_.config;
    const int threshold = c.long_prefill_token_threshold > 0 ? c.long_prefill_token_threshold
                                                             : c.max_num_batched_tokens / 2;
    int num_partial = 0;
    int num_long = 0;
    for (const ScheduledSeq& s : out.scheduled) {
      const Sequence& seq = *scheduler_.find(s.seq_id);
      if (!s.is_prefill_chunk || s.sample || seq.is_decode()) continue;
      ++num_partial;
      if (seq.num_tokens() > threshold) ++num_long;
    }
    EXPECT_LE(num_partial, c.max_num_partial_prefills);
    EXPECT_LE(num_long, c.max_long_partial_prefills);
  }

  // Plays the backend: copies, then each new token's K/V into its slot.
  void write_and_check_pages(const SchedulerOutput& out) {
    arena_.apply(out.page_copies);
    for (const ScheduledSeq& s : out.scheduled) {
      const kvcache::PageTable& table = kv_->page_table(s.seq_id);
      const Sequence& seq = *scheduler_.find(s.seq_id);
      auto [it, admitted] = slots_.try_emplace(s.seq_id);
      if (admitted) {  // fresh or after preemption: slots follow positions (a cached prefix)
        it->second.assign(seq.token_ids.begin(), seq.token_ids.begin() + s.num_computed_tokens);
      }
      ASSERT_EQ(static_cast<int>(it->second.size()), table.num_tokens - s.num_new_tokens);
      for (int i = 0; i < s.num_new_tokens; ++i) {
        const int32_t t = seq.token_ids[s.num_computed_tokens + i];
        arena_.write(table, table.num_tokens - s.num_new_tokens + i, t);
        it->second.push_back(t);
      }
    }
    for (const Fork& fork : out.forks) slots_[fork.child] = slots_.at(fork.parent);
    for (SeqId id : seqs_) {
      if (!kv_->has_sequence(id)) continue;
      ASSERT_TRUE(arena_.holds(kv_->page_table(id), slots_.at(id))) << "sequence " << id;
    }
  }

  void check_page_ownership() {
    std::vector<int> refs(kv_->pool().num_pages(), 0);
    for (SeqId id : seqs_) {
      const Sequence* seq = scheduler_.find(id);
      if (seq == nullptr) {
        EXPECT_FALSE(kv_->has_sequence(id)) << "finished sequence " << id << " holds pages";
        continue;
      }
      EXPECT_EQ(kv_->has_sequence(id), seq->status == SeqStatus::kRunning) << "sequence " << id;
      if (!kv_->has_sequence(id)) continue;
      for (PageId page : kv_->page_table(id).pages) ++refs[page];
    }
    int num_used = 0;
    for (PageId page = 0; page < kv_->pool().num_pages(); ++page) {
      ASSERT_EQ(kv_->pool().ref_count(page), refs[page]) << "page " << page;
      num_used += refs[page] > 0;
    }
    EXPECT_EQ(kv_->usage().num_used, num_used);
  }

  std::vector<SeqOutput> fake_model(const SchedulerOutput& out) {
    std::vector<SeqId> sampled;
    for (const ScheduledSeq& s : out.scheduled) {
      if (s.sample) sampled.push_back(s.seq_id);
    }
    for (const Fork& fork : out.forks) sampled.push_back(fork.child);
    std::vector<SeqOutput> outputs;
    for (SeqId id : sampled) {
      if (scheduler_.find(id)->abort_requested && chance(0.5)) continue;  // may skip them
      const FinishReason finish = chance(0.03) ? FinishReason::kStop : FinishReason::kNone;
      outputs.push_back(SeqOutput{id, {token()}, finish});
      if (!scheduler_.find(id)->abort_requested)
        emitted_[id].push_back(outputs.back().token_ids[0]);
    }
    return outputs;
  }

  void on_finished(const FinishedSeq& f) {
    SCOPED_TRACE("finished sequence " + std::to_string(f.seq_id));
    EXPECT_EQ(scheduler_.find(f.seq_id), nullptr);
    EXPECT_FALSE(kv_->has_sequence(f.seq_id));
    EXPECT_EQ(f.output_token_ids, emitted_[f.seq_id]);
    RequestRecord& request = requests_.at(f.request_id);
    EXPECT_FALSE(request.done);
    ++request.num_finished;
    request.done = f.last_of_request;
    const int num_tokens = request.num_prompt_tokens + static_cast<int>(f.output_token_ids.size());
    switch (f.reason) {
      case FinishReason::kLength:
        EXPECT_TRUE(static_cast<int>(f.output_token_ids.size()) == request.max_tokens ||
                    num_tokens == scenario_.config.max_model_len);
        if (preempted_.contains(f.seq_id)) ++totals_.num_finished_after_preemption;
        break;
      case FinishReason::kStop:
        EXPECT_FALSE(f.output_token_ids.empty());
        break;
      case FinishReason::kAborted:
        EXPECT_TRUE(request.aborted);
        ++totals_.num_aborted;
        break;
      case FinishReason::kError: {
        const int tpp = kv_->tokens_per_page(request.format).value();
        EXPECT_GT(pages_for_tokens(num_tokens, tpp), scenario_.num_pages);
        ++totals_.num_errors;
        break;
      }
      case FinishReason::kNone:
        ADD_FAILURE() << "finished without a reason";
        break;
    }
    slots_.erase(f.seq_id);
  }

  // StreamingLLM-style: keep 2 sink slots and the last 4, in every layer and head.
  void compact_some() {
    for (SeqId id : seqs_) {
      const Sequence* seq = scheduler_.find(id);
      if (seq == nullptr || !kv_->has_sequence(id) || !seq->is_decode() || !chance(0.3)) continue;
      const int num_slots = kv_->num_tokens(id);
      if (num_slots <= 8) continue;
      const std::vector<int> kept = {
          0, 1, num_slots - 4, num_slots - 3, num_slots - 2, num_slots - 1};
      const StatusOr<kvcache::CompactionResult> result =
          kv_->compact(id, std::vector<int32_t>(kNumHeads, static_cast<int32_t>(kept.size())));
      if (!result.ok()) continue;  // no page for a copy: the policy waits
      ++totals_.num_compactions;
      arena_.apply(result->copies);
      arena_.compact(result->source_pages, kept, kv_->page_table(id));
      std::vector<int32_t>& slots = slots_.at(id);
      std::vector<int32_t> survivors;
      survivors.reserve(kept.size());
      for (int slot : kept) survivors.push_back(slots[slot]);
      slots = std::move(survivors);
    }
  }

  void check_the_end(int num_requests) {
    EXPECT_EQ(num_added_, num_requests);
    EXPECT_FALSE(scheduler_.has_unfinished()) << "did not finish in " << kMaxSteps << " steps";
    for (const auto& [id, request] : requests_) {
      EXPECT_TRUE(request.done) << "request " << id;
      if (!request.aborted) {
        EXPECT_EQ(request.num_finished, request.n) << "request " << id;
      }
    }
    EXPECT_EQ(kv_->usage().num_used, 0);
    EXPECT_EQ(kv_->usage().num_free + kv_->usage().num_cached, scenario_.num_pages);
    if (!scenario_.prefix_caching) {
      EXPECT_EQ(kv_->usage().num_free, scenario_.num_pages);
    }
  }

  Scenario scenario_;
  std::mt19937 rng_;
  std::unique_ptr<KvManager> kv_;
  Scheduler scheduler_;
  kvcache::testing::FakeArena arena_;
  std::vector<std::vector<int32_t>> stems_;
  int num_added_ = 0;
  std::map<RequestId, RequestRecord> requests_;
  std::set<SeqId> seqs_;                           // every sequence ever seen
  std::map<SeqId, std::vector<int32_t>> slots_;    // what each live table must hold
  std::map<SeqId, std::vector<int32_t>> emitted_;  // tokens the fake model gave each sequence
  std::set<SeqId> preempted_;
  Totals totals_;
};

SchedulerConfig config(int budget, int max_num_seqs, int watermark_pages = 0) {
  SchedulerConfig c;
  c.max_num_batched_tokens = budget;
  c.max_num_seqs = max_num_seqs;
  c.max_model_len = 40;
  c.watermark_pages = watermark_pages;
  return c;
}

Totals run_scenario(const Scenario& scenario, int num_seeds) {
  Totals sum;
  for (uint32_t seed = 1; seed <= static_cast<uint32_t>(num_seeds); ++seed) {
    SCOPED_TRACE(std::string(scenario.name) + " seed " + std::to_string(seed));
    Driver driver(scenario, seed);
    const Totals totals = driver.run(/*num_requests=*/40);
    if (::testing::Test::HasFailure()) break;
    sum.num_preemptions += totals.num_preemptions;
    sum.num_finished_after_preemption += totals.num_finished_after_preemption;
    sum.num_forks += totals.num_forks;
    sum.num_aborted += totals.num_aborted;
    sum.num_errors += totals.num_errors;
    sum.num_compactions += totals.num_compactions;
  }
  return sum;
}

TEST(SchedulerRandom, RoomyPoolFinishesEveryRequestWithoutPreemption) {
  const Totals totals = run_scenario({"roomy", 200, config(64, 16)}, 10);
  EXPECT_EQ(totals.num_preemptions, 0);
  EXPECT_GT(totals.num_forks, 0);
  EXPECT_GT(totals.num_aborted, 0);
}

TEST(SchedulerRandom, TightPoolPreemptsAndStillFinishesEveryRequest) {
  const Totals totals = run_scenario({"tight", 12, config(16, 6)}, 20);
  EXPECT_GT(totals.num_preemptions, 0);
  EXPECT_GT(totals.num_finished_after_preemption, 0);
  EXPECT_GT(totals.num_errors, 0);  // f32 sequences of 36 tokens need 18 of the 12 pages
}

TEST(SchedulerRandom, TightPoolWithoutPrefixCachingFinishesEveryRequest) {
  const Totals totals = run_scenario({"tight_no_prefix", 12, config(16, 6), false}, 20);
  EXPECT_GT(totals.num_preemptions, 0);
  EXPECT_GT(totals.num_errors, 0);
}

TEST(SchedulerRandom, TightPoolAndSmallBudgetPrefillOverManySteps) {
  const Totals totals = run_scenario({"tight_small_budget", 10, config(6, 6)}, 20);
  EXPECT_GT(totals.num_preemptions, 0);
}

TEST(SchedulerRandom, SmallBudgetChunksEveryPromptAndFinishes) {
  run_scenario({"small_budget", 24, config(4, 4)}, 20);
}

TEST(SchedulerRandom, WatermarkKeepsPagesForRunningSequences) {
  run_scenario({"watermark", 16, config(16, 6, /*watermark_pages=*/2)}, 20);
}

TEST(SchedulerRandom, FewPartialPrefillSlotsAndASmallThresholdFinishEveryRequest) {
  Scenario scenario{"partial_prefills", 24, config(16, 6)};
  scenario.config.long_prefill_token_threshold = 3;
  scenario.config.max_num_partial_prefills = 2;
  scenario.config.max_long_partial_prefills = 1;
  run_scenario(scenario, 20);
}

TEST(SchedulerRandom, CompactedSequencesKeepTheirSurvivorsAndFinish) {
  Scenario scenario{"compress", 12, config(16, 6), true, /*compress=*/true};
  scenario.config.kv_tokens_to_hold = [](const Sequence&) { return 10; };
  EXPECT_GT(run_scenario(scenario, 20).num_compactions, 0);
}

}  // namespace
}  // namespace sieve::scheduler
