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

// SnapKV's scores (snapkv.cc), which pyramidkv and adakv rank with too: [L, Hkv, S].
std::vector<float> snapkv_scores(const PolicyInput& input, int kernel_size, bool max_pooling);
// Reads SnapKV's own parameters (kernel_size, pooling) into the given defaults.
Status read_snapkv_params(ParamReader& reader, int* kernel_size, bool* max_pooling);

}  // namespace sieve::kvcache
