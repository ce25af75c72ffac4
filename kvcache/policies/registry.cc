#include "kvcache/policies/registry.h"

#include "kvcache/policies/policies.h"

namespace sieve::kvcache {

const std::vector<const KvPolicy*>& registered_policies() {
  static const std::vector<const KvPolicy*> policies = {
      streaming_llm_policy(), h2o_policy(),
      tova_policy(),          snapkv_policy(),
      pyramidkv_policy(),     adakv_policy(),
      keydiff_policy(),       knorm_policy(),
      gkv_policy(),           expected_attention_policy(),
      surface_logic_policy(), kvzip_policy(),
  };
  return policies;
}

const KvPolicy* find_policy(std::string_view name) {
  for (const KvPolicy* policy : registered_policies()) {
    if (policy->name() == name) return policy;
  }
  return nullptr;
}

std::vector<std::string_view> compression_method_names() {
  std::vector<std::string_view> names = {"none"};
  for (const KvPolicy* policy : registered_policies()) names.push_back(policy->name());
  return names;
}

}  // namespace sieve::kvcache
