// The compression policies as pure functions: golden decisions from an independent numpy
// reference (tests/fixtures/policies/make_goldens.py), properties every policy must hold on random
// signals, protection enforced, and the request's `compression` object parsed field by field.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kvcache/policies/protection.h"
#include "kvcache/policies/registry.h"
#include "kvcache/policies/select.h"
#include "kvcache/policies/spec.h"
#include "nlohmann/json.hpp"

namespace sieve::kvcache {
namespace {

using nlohmann::json;

CompressionSpec parse_ok(const json& j) {
  auto spec = parse_compression(j);
  EXPECT_TRUE(spec.ok()) << spec.status() << " for " << j.dump();
  return spec.ok() ? *spec : CompressionSpec{};
}

std::string parse_error(const json& j) {
  auto spec = parse_compression(j);
  EXPECT_FALSE(spec.ok()) << j.dump();
  return spec.ok() ? "" : std::string(spec.status().message());
}

// Everything a PolicyInput views, owned.
struct Case {
  int layers = 0, kv_heads = 0, heads = 0, stride = 0;
  std::vector<int32_t> valid_lens, positions;
  std::vector<uint8_t> protect;
  std::vector<float> window, group_max, key_norms, value_norms, anchor_dot, expected, state,
      reconstruction;
  std::vector<int32_t> segment_bounds;
  int num_queries = 0;

  PolicyInput input(const CompressionSpec& spec, int budget) {
    protect = protected_slots(spec.protection, 0, positions, valid_lens, stride);
    PolicyInput in;
    in.num_layers = layers;
    in.num_kv_heads = kv_heads;
    in.num_heads = heads;
    in.valid_lens = valid_lens;
    in.slot_stride = stride;
    in.protected_slots = protect;
    in.positions = positions;
    in.budget = budget;
    in.window = spec.protection.window;
    in.signals.num_queries = num_queries;
    in.signals.window_attention = window;
    in.signals.window_attention_group_max = group_max;
    in.signals.key_norms = key_norms;
    in.signals.value_norms = value_norms;
    in.signals.key_anchor_dot = anchor_dot;
    in.signals.expected_logits = expected;
    in.signals.reconstruction_max = reconstruction;
    in.segment_bounds = segment_bounds;
    in.state = state;
    in.params = spec.params.get();
    return in;
  }
};

std::vector<std::vector<int32_t>> rows_of(const KeepSlots& keep) {
  std::vector<std::vector<int32_t>> rows;
  for (size_t r = 0; r + 1 < keep.indptr.size(); ++r) {
    rows.emplace_back(keep.slots.begin() + keep.indptr[r], keep.slots.begin() + keep.indptr[r + 1]);
  }
  return rows;
}

// A golden case's shape (every slot valid, in token order) and its window attention.
Case case_from(const json& g) {
  Case c;
  c.layers = g["num_layers"];
  c.kv_heads = g["num_kv_heads"];
  c.heads = g["num_heads"];
  c.stride = g["num_slots"];
  c.num_queries = g["num_queries"];
  c.valid_lens.assign(c.layers * c.kv_heads, c.stride);
  for (int r = 0; r < c.layers * c.kv_heads; ++r) {
    for (int v = 0; v < c.stride; ++v) c.positions.push_back(v);
  }
  c.window = g["window_attention"].get<std::vector<float>>();
  return c;
}

TEST(PolicyGoldens, MatchTheNumpyReference) {
  std::ifstream in(std::filesystem::path(SIEVE_SOURCE_DIR) /
                   "tests/fixtures/policies/goldens.json");
  ASSERT_TRUE(in) << "missing goldens.json";
  const json goldens = json::parse(in);
  for (const json& g : goldens["cases"]) {
    SCOPED_TRACE("seed " + std::to_string(g["seed"].get<int>()));
    Case c = case_from(g);
    c.group_max = g["window_attention_group_max"].get<std::vector<float>>();
    c.anchor_dot = g["key_anchor_dot"].get<std::vector<float>>();
    const int budget = g["budget"];
    const int sink = g["sink"];
    const json params = {
        {"sink", sink}, {"window", c.num_queries}, {"protect_system_prompt", false}};
    for (const char* method : {"h2o", "gkv"}) {
      SCOPED_TRACE(method);
      c.state = g["state"].get<std::vector<float>>();
      const CompressionSpec spec =
          parse_ok({{"method", method}, {"budget", budget}, {"params", params}});
      const PolicyInput input = c.input(spec, budget);
      const KeepSlots keep = spec.policy->decide(input);
      check_decision(input, keep, method);
      EXPECT_EQ(rows_of(keep), g[method].get<std::vector<std::vector<int32_t>>>());
    }
    c.expected = g["expected_logits"].get<std::vector<float>>();
    c.value_norms = g["value_norms"].get<std::vector<float>>();
    const CompressionSpec expected =
        parse_ok({{"method", "expected_attention"}, {"budget", budget}, {"params", params}});
    EXPECT_EQ(rows_of(expected.policy->decide(c.input(expected, budget))),
              g["expected_attention"].get<std::vector<std::vector<int32_t>>>())
        << "expected_attention";
    const CompressionSpec snap = parse_ok(
        {{"method", "snapkv"},
         {"budget", budget},
         {"params", {{"sink", 0}, {"window", c.num_queries}, {"protect_system_prompt", false}}}});
    const PolicyInput input = c.input(snap, budget);
    EXPECT_EQ(rows_of(snap.policy->decide(input)),
              g["snapkv"].get<std::vector<std::vector<int32_t>>>());
  }
}

// Synthetic attention of ignoring, surface and logic heads (make_goldens.py): the per-head
// budgets and kept slots of the numpy reference.
TEST(PolicyGoldens, SurfaceLogicMatchesTheNumpyReference) {
  std::ifstream in(std::filesystem::path(SIEVE_SOURCE_DIR) /
                   "tests/fixtures/policies/goldens.json");
  ASSERT_TRUE(in) << "missing goldens.json";
  const json goldens = json::parse(in);
  ASSERT_FALSE(goldens["surface_logic"].empty());
  for (const json& g : goldens["surface_logic"]) {
    SCOPED_TRACE("seed " + std::to_string(g["seed"].get<int>()));
    Case c = case_from(g);
    const int budget = g["budget"];
    const CompressionSpec spec = parse_ok(
        {{"method", "surface_logic"},
         {"budget", budget},
         {"params",
          {{"sink", g["sink"]}, {"window", c.num_queries}, {"protect_system_prompt", false}}}});
    const PolicyInput input = c.input(spec, budget);
    const KeepSlots keep = spec.policy->decide(input);
    check_decision(input, keep, "surface_logic");
    const std::vector<std::vector<int32_t>> rows = rows_of(keep);
    const std::vector<int> counts = g["counts"];
    int64_t total = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      EXPECT_EQ(static_cast<int>(rows[r].size()), counts[r]) << "row " << r;
      total += static_cast<int64_t>(rows[r].size());
    }
    EXPECT_EQ(total, int64_t{budget} * c.layers * c.kv_heads) << "the budget is spent exactly";
    EXPECT_EQ(rows, g["kept"].get<std::vector<std::vector<int32_t>>>());
  }
}

TEST(StreamingLlm, KeepsTheSinksAndTheMostRecent) {
  Case c;
  c.layers = 1, c.kv_heads = 2, c.heads = 2, c.stride = 10;
  c.valid_lens = {10, 10};
  for (int r = 0; r < 2; ++r) {
    for (int v = 0; v < 10; ++v) c.positions.push_back(v);
  }
  const CompressionSpec spec =
      parse_ok({{"method", "streaming_llm"}, {"budget", 5}, {"params", {{"sink", 2}}}});
  const KeepSlots keep = spec.policy->decide(c.input(spec, 5));
  EXPECT_EQ(rows_of(keep), (std::vector<std::vector<int32_t>>{{0, 1, 7, 8, 9}, {0, 1, 7, 8, 9}}));
}

// Random signals of a compacted-looking sequence: heads of unequal lengths, shuffled positions.
Case random_case(std::mt19937& rng, bool equal_lengths) {
  Case c;
  c.layers = 3, c.kv_heads = 2, c.heads = 6, c.stride = 90, c.num_queries = 8;
  std::uniform_int_distribution<int> len(40, 90);
  const int shared = len(rng);
  for (int r = 0; r < c.layers * c.kv_heads; ++r)
    c.valid_lens.push_back(equal_lengths ? shared : len(rng));
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  const size_t kv_size = static_cast<size_t>(c.layers) * c.kv_heads * c.stride;
  for (size_t i = 0; i < kv_size; ++i)
    c.positions.push_back(static_cast<int32_t>(i % c.stride) * 3);
  auto fill = [&](std::vector<float>& v, size_t n) {
    v.resize(n);
    for (float& x : v) x = u(rng);
  };
  fill(c.window, static_cast<size_t>(c.layers) * c.heads * c.stride);
  fill(c.group_max, kv_size);
  fill(c.key_norms, kv_size);
  fill(c.value_norms, kv_size);
  fill(c.anchor_dot, kv_size);
  fill(c.expected, static_cast<size_t>(c.layers) * c.heads * c.stride);
  fill(c.reconstruction, kv_size);
  c.state.assign(kv_size, 0.0f);
  return c;
}

// KVzip shares one budget among every layer and head (KVPress's global top-k of the
// reconstruction scores, the sinks above all), or among each layer's heads with `layerwise`:
// the kept sets of a sort of all the scores.
TEST(Kvzip, KeepsTheGlobalTopOfTheReconstructionScores) {
  for (const bool layerwise : {false, true}) {
    SCOPED_TRACE(layerwise ? "layerwise" : "global");
    std::mt19937 rng(11);
    Case c = random_case(rng, /*equal_lengths=*/true);
    const int n = c.valid_lens[0], rows = c.layers * c.kv_heads;
    const CompressionSpec spec = parse_ok(
        {{"method", "kvzip"},
         {"keep_ratio", 0.3},
         {"params", {{"sink", 2}, {"layerwise", layerwise}, {"protect_system_prompt", false}}}});
    PolicyInput in = c.input(spec, spec.budget_for(n));
    in.budget_exact = spec.exact_budget_for(n);
    const KeepSlots keep = spec.policy->decide(in);
    check_decision(in, keep, "kvzip");
    // The reference: (score, row, slot) of every valid slot, the sinks (positions 0 and 1: slot 0,
    // positions are 3 apart) first, sorted; the best
    // of each group (all rows, or one layer's) kept, int(size · 0.7) of each group dropped.
    std::vector<std::vector<int32_t>> want(rows);
    const int groups = layerwise ? c.layers : 1, group_rows = rows / groups;
    for (int g = 0; g < groups; ++g) {
      std::vector<std::tuple<float, int, int>> all;
      for (int r = g * group_rows; r < (g + 1) * group_rows; ++r) {
        for (int v = 0; v < n; ++v) {
          const size_t slot = static_cast<size_t>(r) * c.stride + v;
          const float score = in.protected_slots[slot] ? INFINITY : c.reconstruction[slot];
          all.emplace_back(-score, r, v);
        }
      }
      std::sort(all.begin(), all.end());
      const int size = static_cast<int>(all.size());
      const int kept = size - static_cast<int>(size * (1.0 - (1.0 - (1.0 - 0.3))));
      for (int i = 0; i < kept; ++i) want[std::get<1>(all[i])].push_back(std::get<2>(all[i]));
    }
    int64_t total = 0;
    for (auto& row : want) std::sort(row.begin(), row.end()), total += row.size();
    EXPECT_EQ(rows_of(keep), want);
    EXPECT_NEAR(static_cast<double>(total), rows * n * 0.3, groups);
    // Rows keep unequal shares.
    std::vector<size_t> sizes;
    for (const auto& row : want) sizes.push_back(row.size());
    EXPECT_NE(*std::min_element(sizes.begin(), sizes.end()),
              *std::max_element(sizes.begin(), sizes.end()));
  }
}

TEST(EveryPolicy, KeepsProtectedSlotsAndStaysWithinBudget) {
  for (const KvPolicy* policy : registered_policies()) {
    SCOPED_TRACE(std::string(policy->name()));
    for (int seed = 0; seed < 8; ++seed) {
      std::mt19937 rng(seed);
      // tova decides per layer: its heads keep equal lengths.
      Case c = random_case(rng, policy->name() == "tova");
      const int budget = 20 + seed;
      json params = {{"sink", 3}, {"protected_spans", {{30, 36}}}};
      if (policy->name() != "tova" && policy->name() != "streaming_llm") params["window"] = 8;
      const CompressionSpec spec =
          parse_ok({{"method", policy->name()}, {"budget", budget}, {"params", params}});
      const PolicyInput input = c.input(spec, budget);
      const KeepSlots keep = policy->decide(input);
      check_decision(input, keep, policy->name());  // ascending, valid, protected kept
      Case copy = c;  // a second input of its own (the first one views c's arrays)
      const KeepSlots again = policy->decide(copy.input(spec, budget));
      EXPECT_EQ(keep.slots, again.slots) << "not deterministic";
      int64_t kept = 0, rows = c.layers * c.kv_heads;
      for (int r = 0; r < rows; ++r) {
        const int n = keep.indptr[r + 1] - keep.indptr[r];
        kept += n;
        if (policy->name() != "pyramidkv" && policy->name() != "adakv" &&
            policy->name() != "kvzip") {
          int num_protected = 0;
          for (int v = 0; v < c.valid_lens[r]; ++v)
            num_protected += input.protected_slots[r * c.stride + v];
          EXPECT_EQ(n, std::min(c.valid_lens[r], std::max(budget, num_protected))) << "row " << r;
        }
      }
      // Head- and layer-adaptive policies keep the budget on average (protection may add).
      EXPECT_LE(kept, rows * (budget + 16)) << "keeps far more than the budget";
    }
  }
}

TEST(FairEviction, QuotasFollowTheLengthsAndCoverProtection) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    const int segments = 1 + static_cast<int>(rng() % 6);
    std::vector<int> lengths(segments), protect(segments);
    int total = 0, total_protected = 0;
    for (int s = 0; s < segments; ++s) {
      lengths[s] = static_cast<int>(rng() % 40);
      protect[s] = lengths[s] == 0 ? 0 : static_cast<int>(rng() % (lengths[s] + 1) / 3);
      total += lengths[s];
      total_protected += protect[s];
    }
    const int want = total == 0 ? 0 : static_cast<int>(rng() % (total + 1));
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " want " << want);
    const std::vector<int> q = segment_quotas(lengths, protect, want);
    int sum = 0;
    bool any_fixed = false;
    for (int s = 0; s < segments; ++s) {
      EXPECT_GE(q[s], protect[s]) << "segment " << s;
      EXPECT_LE(q[s], lengths[s]) << "segment " << s;
      sum += q[s];
      any_fixed = any_fixed || (protect[s] > 0 && q[s] == protect[s]);
    }
    EXPECT_EQ(sum, std::max(want, total_protected));
    if (!any_fixed && total > 0) {  // the plain proportional split, rounded
      for (int s = 0; s < segments; ++s) {
        EXPECT_NEAR(q[s], static_cast<double>(want) * lengths[s] / total, 1.0) << "segment " << s;
      }
    }
  }
  // Protection beyond a segment's share takes from the others.
  EXPECT_EQ(segment_quotas(std::vector<int>{10, 10}, std::vector<int>{8, 0}, 10),
            (std::vector<int>{8, 2}));
  EXPECT_EQ(segment_quotas(std::vector<int>{30, 10, 20}, std::vector<int>{0, 0, 0}, 30),
            (std::vector<int>{15, 5, 10}));
}

// Scores that favour one segment everywhere: without fair eviction it keeps nearly everything,
// with it each segment keeps its share, of its own best slots.
TEST(FairEviction, EverySegmentKeepsItsShareOfItsBest) {
  for (const KvPolicy* policy : registered_policies()) {
    SCOPED_TRACE(std::string(policy->name()));
    std::mt19937 rng(11);
    Case c = random_case(rng, /*equal_lengths=*/true);
    // Positions 0, 3, 6, ...: segments [0, 60), [60, 150) and [150, 1000). Knorm's favourites,
    // the keys of small norm, all in the first segment.
    for (size_t i = 0; i < c.positions.size(); ++i) {
      if (c.positions[i] < 60) c.key_norms[i] *= 0.01f;
    }
    const int budget = 24;
    json params = {{"sink", 2}, {"window", 4}, {"protect_system_prompt", false}};
    if (policy->name() == "tova" || policy->name() == "streaming_llm") params["window"] = 1;
    const CompressionSpec spec = parse_ok({{"method", policy->name()},
                                           {"budget", budget},
                                           {"fair_eviction", true},
                                           {"segments", {{60, 150}}},
                                           {"params", params}});
    const int n = c.valid_lens[0];
    c.segment_bounds = segment_bounds(spec.protection, 0, 1000);
    ASSERT_EQ(c.segment_bounds, (std::vector<int32_t>{60, 150, 1000}));
    const PolicyInput input = c.input(spec, budget);
    const KeepSlots keep = policy->decide(input);
    check_decision(input, keep, policy->name());
    for (int r = 0; r < c.layers * c.kv_heads; ++r) {
      const int row_budget = keep.indptr[r + 1] - keep.indptr[r];
      std::vector<int> lengths(3, 0), protect(3, 0), kept(3, 0);
      auto segment = [&](int v) {
        const int position = c.positions[r * c.stride + v];
        return position < 60 ? 0 : position < 150 ? 1 : 2;
      };
      for (int v = 0; v < n; ++v) {
        ++lengths[segment(v)];
        protect[segment(v)] += input.protected_slots[r * c.stride + v];
      }
      for (int i = keep.indptr[r]; i < keep.indptr[r + 1]; ++i) ++kept[segment(keep.slots[i])];
      EXPECT_EQ(kept, segment_quotas(lengths, protect, row_budget)) << "row " << r;
      if (policy->name() != "knorm") continue;
      // Within a segment, the kept unprotected keys are its smallest.
      for (int seg = 0; seg < 3; ++seg) {
        float worst_kept = 0, best_dropped = INFINITY;
        for (int v = 0; v < n; ++v) {
          if (segment(v) != seg || input.protected_slots[r * c.stride + v]) continue;
          const float norm = c.key_norms[r * c.stride + v];
          const bool is_kept = std::binary_search(keep.slots.begin() + keep.indptr[r],
                                                  keep.slots.begin() + keep.indptr[r + 1], v);
          if (is_kept) worst_kept = std::max(worst_kept, norm);
          if (!is_kept) best_dropped = std::min(best_dropped, norm);
        }
        EXPECT_LE(worst_kept, best_dropped) << "row " << r << " segment " << seg;
      }
    }
  }
}

TEST(Protection, RefusesADecisionThatDropsAProtectedSlot) {
  Case c;
  c.layers = 1, c.kv_heads = 1, c.heads = 1, c.stride = 8;
  c.valid_lens = {8};
  for (int v = 0; v < 8; ++v) c.positions.push_back(v);
  const CompressionSpec spec =
      parse_ok({{"method", "knorm"}, {"budget", 4}, {"params", {{"sink", 1}, {"window", 2}}}});
  const PolicyInput input = c.input(spec, 4);
  KeepSlots keep{{0, 4}, {0, 3, 6, 7}};
  check_decision(input, keep, "test");  // sink 0 and window 6, 7 kept: fine
  KeepSlots drops_sink{{0, 3}, {3, 6, 7}};
  EXPECT_DEATH(check_decision(input, drops_sink, "test"), "evicts protected slot 0");
  KeepSlots drops_recent{{0, 3}, {0, 3, 7}};
  EXPECT_DEATH(check_decision(input, drops_recent, "test"), "evicts protected slot 6");
}

TEST(Protection, CoversTheSystemPromptAndSpansByPosition) {
  Protection p;
  p.sink = 1;
  p.window = 1;
  p.spans = {{20, 22}};
  // One row whose slots hold positions 0, 5, 10, ..., 45 (a compacted head).
  std::vector<int32_t> positions;
  for (int v = 0; v < 10; ++v) positions.push_back(5 * v);
  const std::vector<int32_t> lens = {10};
  std::vector<uint8_t> mask = protected_slots(p, /*system_prompt_tokens=*/11, positions, lens, 10);
  EXPECT_EQ(mask, (std::vector<uint8_t>{1, 1, 1, 0, 1, 0, 0, 0, 0, 1}));
  p.protect_system_prompt = false;
  mask = protected_slots(p, 11, positions, lens, 10);
  EXPECT_EQ(mask, (std::vector<uint8_t>{1, 0, 0, 0, 1, 0, 0, 0, 0, 1}));
}

TEST(Select, PoolsAsPyTorchDoes) {
  std::vector<float> row = {1, 2, 3, 4, 5, 100};
  avg_pool(row, 5, 3);            // the sixth entry is outside the pooled range and stays
  EXPECT_FLOAT_EQ(row[0], 1.0f);  // (0 + 1 + 2) / 3: zero padding counts
  EXPECT_FLOAT_EQ(row[2], 3.0f);
  EXPECT_FLOAT_EQ(row[4], 3.0f);  // (4 + 5 + 0) / 3
  EXPECT_FLOAT_EQ(row[5], 100.0f);
  std::vector<float> m = {1, 5, 2, 0, 0};
  max_pool(m, 5, 3);
  EXPECT_EQ(m, (std::vector<float>{5, 5, 5, 2, 0}));
}

TEST(CompressionSpec, ParsesAndNamesEveryBadField) {
  const CompressionSpec none = parse_ok(json::object());
  EXPECT_FALSE(none.compresses());
  const CompressionSpec snap = parse_ok({{"method", "snapkv"}, {"keep_ratio", 0.25}});
  EXPECT_TRUE(snap.compresses());
  EXPECT_EQ(snap.protection.window, 32);
  EXPECT_EQ(snap.protection.sink, 4);
  EXPECT_TRUE(snap.protection.protect_system_prompt);
  // KVPress's rounding: int(n * (1 - (1 - keep))): 400 tokens at keep 0.1 keep 39.
  EXPECT_EQ(parse_ok({{"method", "knorm"}, {"keep_ratio", 0.1}}).budget_for(400), 39);
  EXPECT_EQ(parse_ok({{"method", "knorm"}, {"keep_ratio", 0.5}}).budget_for(401), 200);
  EXPECT_EQ(parse_ok({{"method", "knorm"}, {"budget", 64}}).budget_for(4000), 64);

  EXPECT_EQ(parse_error({{"method", "nope"}}).rfind("compression.method", 0), 0u);
  EXPECT_EQ(parse_error({{"method", "snapkv"}}).rfind("compression.budget", 0), 0u);
  EXPECT_EQ(parse_error({{"method", "none"}, {"budget", 4}}).rfind("compression.budget", 0), 0u);
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 4}, {"keep_ratio", 0.5}})
                .rfind("compression.budget", 0),
            0u);
  EXPECT_EQ(
      parse_error({{"method", "knorm"}, {"keep_ratio", 1.5}}).rfind("compression.keep_ratio", 0),
      0u);
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 0}}).rfind("compression.budget", 0), 0u);
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 8}, {"kv_format", "int3"}})
                .rfind("compression.kv_format", 0),
            0u);
  EXPECT_EQ(parse_ok({{"method", "none"}}).kv_format, "");  // the backend's own
  for (const char* format : {"f32", "bf16", "fp8_e4m3", "int8", "int4"}) {
    EXPECT_EQ(parse_ok({{"method", "snapkv"}, {"budget", 8}, {"kv_format", format}}).kv_format,
              format);
  }
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 8}, {"params", {{"nope", 1}}}}),
            "compression.params.nope: unknown parameter for method 'knorm'");
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 8}, {"params", {{"window", 65}}}})
                .rfind("compression.params.window", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "snapkv"}, {"budget", 8}, {"params", {{"kernel_size", 4}}}})
                .rfind("compression.params.kernel_size", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "gkv"}, {"budget", 8}, {"params", {{"combine", "sum"}}}})
                .rfind("compression.params.combine", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "snapkv"}, {"budget", 8}, {"params", {{"interval", 4}}}})
                .rfind("compression.params.interval", 0),
            0u);
  EXPECT_EQ(
      parse_error({{"method", "knorm"}, {"budget", 8}, {"params", {{"protected_spans", {{5, 2}}}}}})
          .rfind("compression.params.protected_spans", 0),
      0u);
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 8}, {"params", {{"sink", "x"}}}})
                .rfind("compression.params.sink", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"surprise", 1}}).rfind("compression.surprise:", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "expected_attention"},
                         {"budget", 8},
                         {"params", {{"n_future_positions", 0}}}})
                .rfind("compression.params.n_future_positions", 0),
            0u);
  EXPECT_EQ(
      parse_error(
          {{"method", "expected_attention"}, {"budget", 8}, {"params", {{"use_covariance", 1}}}})
          .rfind("compression.params.use_covariance", 0),
      0u);
  EXPECT_EQ(
      parse_error({{"method", "expected_attention"}, {"budget", 8}, {"params", {{"epsilon", -1}}}})
          .rfind("compression.params.epsilon", 0),
      0u);
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 8}, {"fair_eviction", 1}}),
            "compression.fair_eviction: must be true or false");
  EXPECT_EQ(parse_error({{"method", "none"}, {"fair_eviction", true}})
                .rfind("compression.fair_eviction", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "knorm"}, {"budget", 8}, {"segments", {{0, 4}}}})
                .rfind("compression.segments", 0),
            0u);
  for (const json& bad : {json(3), json({{4, 2}}), json({{0, 4}, {3, 8}}), json({{0, 1, 2}})}) {
    EXPECT_EQ(parse_error(
                  {{"method", "knorm"}, {"budget", 8}, {"fair_eviction", true}, {"segments", bad}})
                  .rfind("compression.segments", 0),
              0u)
        << bad.dump();
  }
  const CompressionSpec fair = parse_ok({{"method", "knorm"},
                                         {"budget", 8},
                                         {"fair_eviction", true},
                                         {"segments", {{40, 90}, {5, 9}}}});
  EXPECT_TRUE(fair.protection.fair_eviction);
  EXPECT_EQ(segment_bounds(fair.protection, 12, 100),
            (std::vector<int32_t>{5, 9, 12, 40, 90, 100}));
  EXPECT_TRUE(
      segment_bounds(parse_ok({{"method", "knorm"}, {"budget", 8}}).protection, 12, 100).empty());
  EXPECT_EQ(
      parse_error({{"method", "surface_logic"}, {"budget", 8}, {"params", {{"ignore_mass", 1.5}}}})
          .rfind("compression.params.ignore_mass", 0),
      0u);
  EXPECT_EQ(parse_error(
                {{"method", "surface_logic"}, {"budget", 8}, {"params", {{"surface_weight", -1}}}})
                .rfind("compression.params.surface_weight", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "kvzip"}, {"budget", 8}, {"params", {{"chunk_size", 0}}}})
                .rfind("compression.params.chunk_size", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "kvzip"}, {"budget", 8}, {"params", {{"layerwise", "no"}}}})
                .rfind("compression.params.layerwise", 0),
            0u);
  EXPECT_EQ(parse_error({{"method", "kvzip"}, {"budget", 8}, {"params", {{"interval", 64}}}}),
            "compression.params.interval: method 'kvzip' compresses at the prompt's end only: 0");
  EXPECT_EQ(parse_ok({{"method", "kvzip"}, {"budget", 8}}).interval, 0);
  EXPECT_EQ(parse_ok({{"method", "kvzip"}, {"budget", 8}}).protection.window, 0);
  EXPECT_EQ(parse_error(json::array()), "compression: must be an object");
}

TEST(Registry, ListsEveryPolicyOnce) {
  const std::vector<std::string_view> names = compression_method_names();
  EXPECT_EQ(names.front(), "none");
  for (const char* expected :
       {"streaming_llm", "h2o", "tova", "snapkv", "pyramidkv", "adakv", "keydiff", "knorm", "gkv",
        "expected_attention", "surface_logic", "kvzip"}) {
    EXPECT_EQ(std::count(names.begin(), names.end(), expected), 1) << expected;
    EXPECT_NE(find_policy(expected), nullptr);
  }
  EXPECT_EQ(find_policy("none"), nullptr);
}

}  // namespace
}  // namespace sieve::kvcache
