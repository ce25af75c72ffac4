// The host's share of one compression action: protection, a policy's decide() and the decision
// check, for every registered policy, at a model's KV geometry (default Llama-3.1-8B: 32 layers,
// 8 KV heads, 32 query heads) on random signals. A decode-time action sees budget + interval
// slots a row; a prefill-end action the whole prompt. The backend's part (signals, compaction)
// is not here: bench/gpu/compression_throughput.sh measures whole actions.
//
//   build/bench/sieve_bench_policy_decide [--budget 512] [--slots 576] [--reps 50]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "CLI/CLI.hpp"
#include "kvcache/policies/protection.h"
#include "kvcache/policies/registry.h"
#include "kvcache/policies/spec.h"
#include "nlohmann/json.hpp"

namespace sieve::bench {
namespace {

struct Options {
  int num_layers = 32, num_kv_heads = 8, num_heads = 32;
  int budget = 512;
  int slots = 576;  // valid slots a row when the policy acts
  int window = 32;
  int reps = 50;
};

std::vector<float> random_rows(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(const Options& o) {
  const int rows = o.num_layers * o.num_kv_heads;
  const int stride = o.slots;
  std::mt19937 rng(1);
  const std::vector<float> per_head = random_rows(size_t(o.num_layers) * o.num_heads * stride, rng);
  const std::vector<float> per_kv_head = random_rows(size_t(rows) * stride, rng);
  std::vector<int32_t> valid_lens(rows, o.slots);
  std::vector<int32_t> positions(size_t(rows) * stride);
  for (int r = 0; r < rows; ++r) {
    for (int v = 0; v < stride; ++v) positions[size_t(r) * stride + v] = v;
  }
  std::printf("%-16s %12s %12s   (%d rows of %d slots, budget %d)\n", "policy", "median ms",
              "per row us", rows, o.slots, o.budget);
  for (const kvcache::KvPolicy* policy : kvcache::registered_policies()) {
    auto spec = kvcache::parse_compression(
        {{"method", policy->name()}, {"budget", o.budget}, {"params", {{"window", o.window}}}});
    if (!spec.ok()) {
      std::fprintf(stderr, "%s: %s\n", std::string(policy->name()).c_str(),
                   std::string(spec.status().message()).c_str());
      return 1;
    }
    const kvcache::PolicyNeeds needs = policy->needs(*spec->params);
    std::vector<float> state(size_t(rows) * stride, 0.0f);
    std::vector<double> ms;
    for (int rep = 0; rep < o.reps; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      const std::vector<uint8_t> protect =
          kvcache::protected_slots(spec->protection, 0, positions, valid_lens, stride);
      kvcache::PolicyInput in;
      in.num_layers = o.num_layers;
      in.num_kv_heads = o.num_kv_heads;
      in.num_heads = o.num_heads;
      in.valid_lens = valid_lens;
      in.slot_stride = stride;
      in.protected_slots = protect;
      in.positions = positions;
      in.budget = o.budget;
      in.budget_exact = o.budget;
      in.window = spec->protection.window;
      in.at_prefill_end = false;
      in.signals.num_queries = needs.any_window() ? o.window : 0;
      if (needs.window_attention) in.signals.window_attention = per_head;
      if (needs.window_attention_group_max) in.signals.window_attention_group_max = per_kv_head;
      if (needs.key_norms) in.signals.key_norms = per_kv_head;
      if (needs.value_norms) in.signals.value_norms = per_kv_head;
      if (needs.key_anchor_dot) in.signals.key_anchor_dot = per_kv_head;
      if (needs.expected_logits) in.signals.expected_logits = per_head;
      if (needs.reconstruction_chunk > 0) in.signals.reconstruction_max = per_kv_head;
      if (needs.slot_state) in.state = state;
      in.params = spec->params.get();
      const kvcache::KeepSlots keep = policy->decide(in);
      kvcache::check_decision(in, keep, policy->name());
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
    const double m = median(ms);
    std::printf("%-16s %12.3f %12.2f\n", std::string(policy->name()).c_str(), m, m * 1e3 / rows);
  }
  return 0;
}

}  // namespace
}  // namespace sieve::bench

int main(int argc, char** argv) {
  sieve::bench::Options o;
  CLI::App app("Host time of one compression action's decision, per policy");
  app.add_option("--layers", o.num_layers);
  app.add_option("--kv-heads", o.num_kv_heads);
  app.add_option("--heads", o.num_heads);
  app.add_option("--budget", o.budget);
  app.add_option("--slots", o.slots, "valid slots a row when the policy acts");
  app.add_option("--window", o.window);
  app.add_option("--reps", o.reps);
  CLI11_PARSE(app, argc, argv);
  return sieve::bench::run(o);
}
