#pragma once
// How large the KV cache is: a page's bytes from the model's shape, and how many pages the
// engine gets from its config and the device's memory.

#include <cstddef>

#include "core/status.h"
#include "engine/engine_config.h"
#include "kernels/backend.h"
#include "models/config.h"

namespace sieve::engine {

// A page holds `page_tokens` tokens of K and V in bf16 for every layer and KV head; its byte
// size is fixed by this, KV formats decide how many tokens of theirs fit.
size_t kv_page_bytes(const models::ModelConfig& config, int page_tokens);

// config.num_kv_pages when set, else the pages of config.kv_cache_bytes, else on a GPU
// gpu_memory_utilization of its memory less what weights and activations use (vLLM's split),
// elsewhere 1 GiB. Call after the weights and the model runner are allocated.
StatusOr<int> kv_cache_pages(const EngineConfig& config, size_t page_bytes,
                             const kernels::Backend& backend);

}  // namespace sieve::engine
