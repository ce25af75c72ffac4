#pragma once
// Each policy file's one entry point, for the registry's list (registry.cc).

#include <vector>

#include "core/status.h"
#include "kvcache/policies/policy.h"

namespace sieve::kvcache {

const KvPolicy* streaming_llm_policy();
const KvPolicy* h2o_policy();
const KvPolicy* tova_policy();
const KvPolicy* snapkv_policy();
const KvPolicy* pyramidkv_policy();
const KvPolicy* adakv_policy();
const KvPolicy* keydiff_policy();
const KvPolicy* knorm_policy();
const KvPolicy* gkv_policy();
const KvPolicy* expected_attention_policy();
const KvPolicy* surface_logic_policy();
const KvPolicy* kvzip_policy();

// SnapKV's scoring (snapkv.cc), which pyramidkv, adakv and surface_logic rank with too.
struct SnapKvScoring {
  int kernel_size = 5;
  bool max_pooling = false;

  // Reads SnapKV's own parameters (kernel_size, pooling) over these defaults.
  Status read(ParamReader& reader);
  // The scores [L, Hkv, S] from the window attention per query head.
  std::vector<float> scores(const PolicyInput& input) const;
  // What the scores read: the window attention per query head.
  static PolicyNeeds needs() {
    PolicyNeeds n;
    n.window_attention = true;
    return n;
  }
};

}  // namespace sieve::kvcache
