#pragma once
// The one list of compression policies (no static self-registration: the linker would drop it
// from a static library).

#include <string_view>
#include <vector>

#include "kvcache/policies/policy.h"

namespace sieve::kvcache {

// Every registered policy, in the order the list gives them; they live for the program.
const std::vector<const KvPolicy*>& registered_policies();
// The policy named `name`, or null.
const KvPolicy* find_policy(std::string_view name);
// "none" and every registered policy's name, for error messages and listings.
std::vector<std::string_view> compression_method_names();

}  // namespace sieve::kvcache
