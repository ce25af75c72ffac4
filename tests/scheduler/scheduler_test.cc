#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "tests/kvcache/kv_test_util.h"

namespace sieve::scheduler {
namespace {

using kvcache::KvFormatId;
using kvcache::KvManager;

SchedulerConfig small_config() {
  SchedulerConfig config;
  config.max_num_batched_tokens = 16;
  config.max_num_seqs = 4;
  config.max_model_len = 64;
  return config;
}

// A KvManager of `num_pages` pages and a scheduler over it.
struct Harness {
  // 4 bf16 tokens per page of 256 bytes (kvcache::testing::kGeometry).
  Harness(int num_pages, const SchedulerConfig& config, size_t page_bytes = 256,
          bool prefix_caching = true)
      : kv(kvcache::testing::make_manager(num_pages, prefix_caching, page_bytes)),
        scheduler(config, *kv) {}

  SeqId add(RequestId id, int num_prompt_tokens, int max_tokens, int n = 1, int32_t first = 100,
            bool use_prefix_cache = true) {
    RequestSpec spec;
    spec.use_prefix_cache = use_prefix_cache;
    spec.request_id = id;
    spec.prompt_token_ids.resize(num_prompt_tokens);
    std::iota(spec.prompt_token_ids.begin(), spec.prompt_token_ids.end(), first);
    spec.max_tokens = max_tokens;
    spec.n = n;
    return scheduler.add_request(std::move(spec)).value();
  }

  // Samples `token` for every sequence the step asked for and returns what update() finished.
  std::vector<FinishedSeq> sample(const SchedulerOutput& out, int32_t token,
                                  FinishReason finish = FinishReason::kNone) {
    std::vector<SeqOutput> outputs;
    for (const ScheduledSeq& seq : out.scheduled) {
      if (seq.sample) outputs.push_back({seq.seq_id, {token}, finish});
    }
    for (const Fork& fork : out.forks) outputs.push_back({fork.child, {token}, finish});
    return scheduler.update(outputs);
  }

  std::unique_ptr<KvManager> kv;
  Scheduler scheduler;
};

TEST(Scheduler, RejectsInvalidRequestsNamingTheField) {
  Harness h(4, small_config());
  auto error = [&](RequestSpec spec) {
    return std::string(h.scheduler.add_request(std::move(spec)).status().message());
  };
  EXPECT_NE(error(RequestSpec{1, {}, 4, 1}).find("prompt"), std::string::npos);
  EXPECT_NE(error(RequestSpec{1, {1}, 0, 1}).find("max_tokens"), std::string::npos);
  EXPECT_NE(error(RequestSpec{1, {1}, 4, 0}).find("n must"), std::string::npos);
  EXPECT_NE(error(RequestSpec{1, {1}, 4, 5}).find("n must"), std::string::npos);
  EXPECT_NE(error(RequestSpec{1, std::vector<int32_t>(64, 1), 4, 1}).find("max_model_len"),
            std::string::npos);
  EXPECT_NE(error(RequestSpec{1, std::vector<int32_t>(17, 1), 4, 1}).find("KV pages"),
            std::string::npos);
  ASSERT_TRUE(h.scheduler.add_request(RequestSpec{1, {1}, 4, 1}).ok());
  EXPECT_NE(error(RequestSpec{1, {1}, 4, 1}).find("request_id"), std::string::npos);

  Harness tiny_pages(4, small_config(), /*page_bytes=*/64);  // no f32 token fits a page
  RequestSpec f32{2, {1}, 4, 1, KvFormatId::kF32};
  EXPECT_NE(std::string(tiny_pages.scheduler.add_request(f32).status().message()).find("f32"),
            std::string::npos);
}

TEST(Scheduler, SplitsALongPromptIntoChunksWithinTheBudget) {
  SchedulerConfig config = small_config();
  config.max_num_batched_tokens = 8;
  Harness h(16, config);
  const SeqId seq = h.add(1, 20, 4);
  for (int chunk = 0; chunk < 3; ++chunk) {
    const SchedulerOutput out = h.scheduler.schedule();
    ASSERT_EQ(out.scheduled.size(), 1u);
    const ScheduledSeq& s = out.scheduled[0];
    EXPECT_EQ(s.seq_id, seq);
    EXPECT_EQ(s.num_computed_tokens, 8 * chunk);
    EXPECT_EQ(s.num_new_tokens, chunk < 2 ? 8 : 4);
    EXPECT_TRUE(s.is_prefill_chunk);
    EXPECT_EQ(s.is_last_prefill_chunk, chunk == 2);
    EXPECT_EQ(s.sample, chunk == 2);
    EXPECT_EQ(h.kv->num_tokens(seq), 8 * chunk + s.num_new_tokens);
    h.sample(out, 7);
  }
  const SchedulerOutput decode = h.scheduler.schedule();
  ASSERT_EQ(decode.scheduled.size(), 1u);
  EXPECT_FALSE(decode.scheduled[0].is_prefill_chunk);
  EXPECT_EQ(decode.scheduled[0].num_computed_tokens, 20);
  EXPECT_EQ(decode.scheduled[0].num_new_tokens, 1);
}

TEST(Scheduler, SchedulesDecodesBeforePrefillChunks) {
  SchedulerConfig config = small_config();
  config.max_num_batched_tokens = 8;
  Harness h(16, config);
  const SeqId first = h.add(1, 4, 8);
  h.sample(h.scheduler.schedule(), 7);
  const SeqId second = h.add(2, 20, 8);
  const SchedulerOutput out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[0].seq_id, first);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 1);
  EXPECT_EQ(out.scheduled[1].seq_id, second);
  EXPECT_EQ(out.scheduled[1].num_new_tokens, 7);  // the rest of the budget
  EXPECT_EQ(out.num_scheduled_tokens, 8);
}

TEST(Scheduler, RespectsTheSequenceCap) {
  SchedulerConfig config = small_config();
  config.max_num_seqs = 2;
  Harness h(16, config);
  h.add(1, 2, 2);
  h.add(2, 2, 4);
  const SeqId third = h.add(3, 2, 4);
  SchedulerOutput out = h.scheduler.schedule();
  EXPECT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(h.scheduler.num_waiting(), 1);
  h.sample(out, 7);
  out = h.scheduler.schedule();
  EXPECT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(h.sample(out, 7).size(), 1u);  // the first request is done: a seat opens
  out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[1].seq_id, third);
}

TEST(Scheduler, FinishesAtMaxTokensAndFreesItsPages) {
  Harness h(8, small_config());
  const SeqId seq = h.add(1, 5, 3);
  std::vector<FinishedSeq> finished;
  for (int32_t token = 1; finished.empty(); ++token) {
    finished = h.sample(h.scheduler.schedule(), token);
  }
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].seq_id, seq);
  EXPECT_EQ(finished[0].reason, FinishReason::kLength);
  EXPECT_EQ(finished[0].output_token_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(h.kv->usage().num_used, 0);
  EXPECT_EQ(h.scheduler.find(seq), nullptr);
  EXPECT_FALSE(h.scheduler.has_unfinished());
}

TEST(Scheduler, EndsASequenceWhenTheEngineSeesAStop) {
  Harness h(8, small_config());
  h.add(1, 5, 30);
  h.sample(h.scheduler.schedule(), 1);
  const std::vector<FinishedSeq> finished =
      h.sample(h.scheduler.schedule(), 2, FinishReason::kStop);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].reason, FinishReason::kStop);
  EXPECT_EQ(finished[0].output_token_ids, (std::vector<int32_t>{1, 2}));
}

TEST(Scheduler, FinishesAtMaxModelLen) {
  SchedulerConfig config = small_config();
  config.max_model_len = 7;
  Harness h(8, config);
  h.add(1, 5, 30);
  h.sample(h.scheduler.schedule(), 1);
  const std::vector<FinishedSeq> finished = h.sample(h.scheduler.schedule(), 2);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].reason, FinishReason::kLength);
}

// Two sequences fill a pool of 4 pages (16 tokens); the older one's growth preempts the newer.
TEST(Scheduler, PreemptsTheNewestSequenceWhenPagesRunOut) {
  Harness h(4, small_config());
  const SeqId older = h.add(1, 7, 6);
  const SeqId newer = h.add(2, 7, 6, 1, 300);
  h.sample(h.scheduler.schedule(), 1);                 // prefill both: 2 pages each
  h.sample(h.scheduler.schedule(), 2);                 // decode token 8 of each: still 2 pages each
  const SchedulerOutput out = h.scheduler.schedule();  // token 9 needs a third page
  EXPECT_EQ(out.preempted, std::vector<SeqId>{newer});
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].seq_id, older);
  EXPECT_EQ(h.scheduler.find(newer)->status, SeqStatus::kPreempted);
  EXPECT_EQ(h.scheduler.find(newer)->num_computed_tokens, 0);
  EXPECT_FALSE(h.kv->has_sequence(newer));
  EXPECT_EQ(h.kv->usage().num_used, 3);
}

TEST(Scheduler, RecomputesAPreemptedSequenceAndFinishesItWithAllItsOutputs) {
  Harness h(4, small_config());
  h.add(1, 7, 6);
  const SeqId newer = h.add(2, 7, 6, 1, 300);
  std::vector<FinishedSeq> finished;
  bool preempted = false;
  bool recomputed = false;
  for (int32_t token = 1; token < 100 && finished.size() < 2; ++token) {
    const SchedulerOutput out = h.scheduler.schedule();
    preempted = preempted || out.preempted == std::vector<SeqId>{newer};
    for (const ScheduledSeq& s : out.scheduled) {
      // Its prompt and the two tokens it had sampled before preemption, recomputed as a prefill
      // (after what the prefix cache still holds of it).
      if (preempted && s.seq_id == newer && s.num_computed_tokens + s.num_new_tokens == 9) {
        recomputed = s.is_prefill_chunk && s.is_last_prefill_chunk;
      }
    }
    for (FinishedSeq& f : h.sample(out, token)) finished.push_back(std::move(f));
  }
  EXPECT_TRUE(preempted);
  EXPECT_TRUE(recomputed);
  ASSERT_EQ(finished.size(), 2u);
  EXPECT_EQ(finished[1].seq_id, newer);
  EXPECT_EQ(finished[1].reason, FinishReason::kLength);
  EXPECT_EQ(finished[1].output_token_ids.size(), 6u);
  EXPECT_EQ(finished[1].output_token_ids[0], 1);
  EXPECT_EQ(finished[1].output_token_ids[1], 2);
  EXPECT_EQ(h.kv->usage().num_used, 0);
}

TEST(Scheduler, ReturnsEveryPageAfterAbort) {
  Harness h(8, small_config());
  const SeqId seq = h.add(1, 9, 30);
  h.sample(h.scheduler.schedule(), 1);
  EXPECT_EQ(h.kv->usage().num_used, 3);
  EXPECT_TRUE(h.scheduler.abort_request(1));
  EXPECT_FALSE(h.scheduler.abort_request(1));  // already aborting
  EXPECT_FALSE(h.scheduler.abort_request(99));
  const SchedulerOutput out = h.scheduler.schedule();
  EXPECT_TRUE(out.scheduled.empty());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].seq_id, seq);
  EXPECT_EQ(out.finished[0].reason, FinishReason::kAborted);
  EXPECT_EQ(out.finished[0].output_token_ids, std::vector<int32_t>{1});
  EXPECT_EQ(h.kv->usage().num_used, 0);
  EXPECT_FALSE(h.scheduler.has_unfinished());
}

TEST(Scheduler, AbortDuringAStepDropsThatStepsSample) {
  Harness h(8, small_config());
  h.add(1, 4, 30);
  const SchedulerOutput out = h.scheduler.schedule();
  EXPECT_TRUE(h.scheduler.abort_request(1));
  EXPECT_TRUE(h.scheduler.update({}).empty());  // the engine may skip an aborted sequence
  const SchedulerOutput next = h.scheduler.schedule();
  ASSERT_EQ(next.finished.size(), 1u);
  EXPECT_TRUE(next.finished[0].output_token_ids.empty());
  EXPECT_EQ(h.kv->usage().num_used, 0);
}

TEST(Scheduler, FinishesWithAnErrorASequenceThatOutgrowsThePool) {
  for (const bool prefix_caching : {true, false}) {
    SCOPED_TRACE(prefix_caching ? "prefix caching" : "no prefix caching");
    Harness h(2, small_config(), 256, prefix_caching);  // 8 tokens
    h.add(1, 6, 20);
    std::vector<FinishedSeq> finished;
    SchedulerOutput out;
    for (int32_t token = 1; token < 10 && finished.empty(); ++token) {
      out = h.scheduler.schedule();
      finished = out.finished;
      if (!out.empty()) h.sample(out, token);
    }
    ASSERT_EQ(finished.size(), 1u);
    EXPECT_EQ(finished[0].reason, FinishReason::kError);
    EXPECT_NE(finished[0].message.find("KV pages"), std::string::npos);
    EXPECT_EQ(finished[0].output_token_ids.size(), 3u);  // slots 6, 7 and 8 would need a 3rd page
    EXPECT_EQ(h.kv->usage().num_used, 0);
    EXPECT_FALSE(h.scheduler.has_unfinished());
  }
}

TEST(Scheduler, ForksParallelSamplesThatShareThePromptPages) {
  Harness h(8, small_config());
  const SeqId parent = h.add(1, 6, 4, /*n=*/3);
  const SchedulerOutput out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  ASSERT_EQ(out.forks.size(), 2u);
  for (const Fork& fork : out.forks) {
    EXPECT_EQ(fork.parent, parent);
    EXPECT_EQ(h.kv->page_table(fork.child).pages, h.kv->page_table(parent).pages);
    EXPECT_EQ(h.scheduler.find(fork.child)->request_id, 1u);
  }
  EXPECT_EQ(h.kv->pool().ref_count(h.kv->page_table(parent).pages[0]), 3);
  EXPECT_EQ(h.scheduler.num_running(), 3);
  h.sample(out, 7);
  // All three write into the shared partial page: the first two copy it, the last owns it.
  const SchedulerOutput decode = h.scheduler.schedule();
  EXPECT_EQ(decode.scheduled.size(), 3u);
  EXPECT_EQ(decode.page_copies.size(), 2u);
  EXPECT_EQ(h.kv->usage().num_used, 1 + 3);
}

TEST(Scheduler, AdmissionStartsAfterTheCachedPrefix) {
  Harness h(8, small_config());
  h.add(1, 9, 1);
  h.sample(h.scheduler.schedule(), 1);
  h.add(2, 9, 1);
  const SchedulerOutput out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].num_computed_tokens, 8);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 1);
  EXPECT_EQ(h.kv->prefix_stats().num_hit_tokens, 8);
}

TEST(Scheduler, RequestsWithoutPrefixCachingComputeTheWholePrompt) {
  Harness h(8, small_config());
  h.add(1, 9, 1);
  h.sample(h.scheduler.schedule(), 1);
  h.add(2, 9, 1, 1, 100, /*use_prefix_cache=*/false);
  const SchedulerOutput out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].num_computed_tokens, 0);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 9);
  EXPECT_EQ(h.kv->prefix_stats().num_hit_tokens, 0);
}

TEST(Scheduler, KvTokensToHoldKeepsPagesForRunningSequences) {
  SchedulerConfig config = small_config();
  config.kv_tokens_to_hold = [](const Sequence&) { return 12; };  // 3 pages each
  Harness h(5, config);
  h.add(1, 4, 8);
  h.add(2, 4, 8, 1, 300);
  // The first runs alone; the second would leave too little for the first to reach 3 pages.
  EXPECT_EQ(h.scheduler.schedule().scheduled.size(), 1u);

  Harness without_hook(5, small_config());
  without_hook.add(1, 4, 8);
  without_hook.add(2, 4, 8, 1, 300);
  EXPECT_EQ(without_hook.scheduler.schedule().scheduled.size(), 2u);
}

TEST(Scheduler, WatermarkHoldsBackAdmission) {
  SchedulerConfig config = small_config();
  config.watermark_pages = 2;
  Harness h(4, config);
  h.add(1, 8, 8);
  h.add(2, 4, 8, 1, 300);
  const SchedulerOutput out = h.scheduler.schedule();
  EXPECT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(h.scheduler.num_waiting(), 1);
}

TEST(Scheduler, AdmitsTheHeadOfTheQueueWhenNothingRuns) {
  SchedulerConfig config = small_config();
  config.watermark_pages = 3;
  config.kv_tokens_to_hold = [](const Sequence&) { return 1000; };  // more than the pool
  Harness h(4, config);
  h.add(1, 8, 2);
  EXPECT_EQ(h.scheduler.schedule().scheduled.size(), 1u);
}

// Pool of 3 pages: `shorter` holds one, `longer` two (6 of 8 slots) after the first step.
TEST(Scheduler, ShrinksAPrefillChunkToTheSlotsLeft) {
  SchedulerConfig config = small_config();
  config.max_num_batched_tokens = 8;
  Harness h(3, config);
  const SeqId shorter = h.add(1, 2, 8);
  const SeqId longer = h.add(2, 10, 8, 1, 300);
  SchedulerOutput out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[1].num_new_tokens, 6);
  h.sample(out, 7);
  out = h.scheduler.schedule();
  EXPECT_TRUE(out.preempted.empty());
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[0].seq_id, shorter);
  EXPECT_EQ(out.scheduled[1].seq_id, longer);
  EXPECT_EQ(out.scheduled[1].num_new_tokens, 2);  // 4 left, 2 fit
  EXPECT_FALSE(out.scheduled[1].sample);
}

// Issue 12, item 7: a short request that arrives during a long chunked prefill runs in the next
// step, with its whole prompt; the long prefill alone keeps the whole budget.
TEST(Scheduler, ShortRequestArrivingDuringALongPrefillRunsInTheNextStep) {
  SchedulerConfig config = small_config();  // budget 16: prefills over 8 tokens are long
  Harness h(32, config);
  const SeqId long_seq = h.add(1, 60, 2);
  SchedulerOutput out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 16);  // alone: the whole budget
  h.sample(out, 7);

  const SeqId short_seq = h.add(2, 5, 2, 1, /*first=*/500);
  out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[0].seq_id, long_seq);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 8);  // capped at the threshold
  EXPECT_EQ(out.scheduled[1].seq_id, short_seq);
  EXPECT_EQ(out.scheduled[1].num_new_tokens, 5);
  EXPECT_TRUE(out.scheduled[1].sample);  // its first token comes from this step
  h.sample(out, 7);

  // The short one decodes while the long one goes on; with nobody waiting, the long one takes
  // the rest of the budget again.
  out = h.scheduler.schedule();
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[0].seq_id, short_seq);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 1);
  EXPECT_EQ(out.scheduled[1].seq_id, long_seq);
  EXPECT_EQ(out.scheduled[1].num_new_tokens, 15);
}

TEST(Scheduler, ShortRequestsPassALongPrefillWaitingForItsSlot) {
  SchedulerConfig config = small_config();
  config.max_num_seqs = 8;
  Harness h(64, config);
  const SeqId first = h.add(1, 40, 2);
  const SeqId second = h.add(2, 40, 2, 1, /*first=*/300);
  const SeqId third = h.add(3, 4, 2, 1, /*first=*/600);
  SchedulerOutput out = h.scheduler.schedule();
  // The first long prefill takes the one long slot and leaves room; the second waits for the
  // slot, and the short one behind it runs now.
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[0].seq_id, first);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 8);
  EXPECT_EQ(out.scheduled[1].seq_id, third);
  EXPECT_TRUE(out.scheduled[1].sample);
  EXPECT_EQ(h.scheduler.find(second)->status, SeqStatus::kWaiting);
  h.sample(out, 7);
  // The second starts once the first has its whole prompt; a blocked long prefill does not cap
  // the running one, which takes what the decodes leave.
  int computed = 8;
  bool second_ran = false;
  for (int step = 0; step < 10 && !second_ran; ++step) {
    out = h.scheduler.schedule();
    int budget_left = 16;
    for (const ScheduledSeq& s : out.scheduled) {
      if (s.seq_id == first) {
        EXPECT_EQ(s.num_new_tokens, std::min(40 - computed, budget_left));
        computed += s.num_new_tokens;
      } else if (s.seq_id == second) {
        EXPECT_EQ(computed, 40);
        second_ran = true;
      }
      budget_left -= s.num_new_tokens;
    }
    h.sample(out, 7);
  }
  EXPECT_TRUE(second_ran);
}

TEST(Scheduler, LimitsThePrefillsInProgress) {
  SchedulerConfig config = small_config();
  config.long_prefill_token_threshold = 4;
  config.max_num_partial_prefills = 2;
  config.max_long_partial_prefills = 2;
  Harness h(64, config);
  const SeqId a = h.add(1, 20, 2);
  const SeqId b = h.add(2, 20, 2, 1, /*first=*/300);
  const SeqId c = h.add(3, 20, 2, 1, /*first=*/600);
  for (int step = 0; step < 2; ++step) {
    const SchedulerOutput& out = h.scheduler.schedule();
    ASSERT_EQ(out.scheduled.size(), 2u);
    EXPECT_EQ(out.scheduled[0].seq_id, a);
    EXPECT_EQ(out.scheduled[1].seq_id, b);
    EXPECT_EQ(out.scheduled[0].num_new_tokens, 4);
    EXPECT_EQ(out.scheduled[1].num_new_tokens, 4);
    EXPECT_EQ(h.scheduler.find(c)->status, SeqStatus::kWaiting);
    h.sample(out, 7);
  }
}

TEST(SchedulerDeathTest, ScheduleBeforeUpdateIsABug) {
  Harness h(4, small_config());
  h.add(1, 4, 8);
  (void)h.scheduler.schedule();
  EXPECT_DEATH((void)h.scheduler.schedule(), "before update");
}

}  // namespace
}  // namespace sieve::scheduler
