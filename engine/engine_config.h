#pragma once
// The engine's start-up settings.

#include <cstddef>

namespace sieve::engine {

struct EngineConfig {
  int max_num_batched_tokens = 2048;
  int max_num_seqs = 256;
  int max_model_len = 0;  // 0 = the model's context length
  int num_kv_pages = 0;   // 0 = derived from kv_cache_bytes
  // 0 = on a GPU, gpu_memory_utilization of its memory less what weights and activations use
  // (vLLM's split); elsewhere 1 GiB.
  size_t kv_cache_bytes = 0;
  double gpu_memory_utilization = 0.9;
  int page_tokens = 16;  // tokens of a bf16 page; a page's bytes are fixed by this
  bool enable_prefix_caching = true;
  // Sequences that may gather queries for their compression policy at once (each holds
  // kMaxQueryWindow rows of every layer's queries while it does; 0: no query-scored policy acts).
  int max_compressing_seqs = 32;
  // Prefill fairness (scheduler::SchedulerConfig): 0 = max_num_batched_tokens / 2.
  int long_prefill_token_threshold = 0;
  int max_num_partial_prefills = 4;
  int max_long_partial_prefills = 1;
};

}  // namespace sieve::engine
