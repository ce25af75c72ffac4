#include "engine/kv_sizing.h"

#include <algorithm>
#include <climits>
#include <string>

#include "spdlog/spdlog.h"

namespace sieve::engine {
namespace {

// vLLM's split of a GPU's memory: the weights and activations are already allocated; the KV
// cache takes gpu_memory_utilization of the device less what is in use, less a headroom for
// what comes later (decode graphs, cuBLAS workspaces, sampling scratch).
StatusOr<size_t> kv_cache_bytes(const EngineConfig& config, const kernels::Backend& backend) {
  if (config.kv_cache_bytes > 0) return config.kv_cache_bytes;
  const auto memory = backend.memory_info();
  if (!memory) return size_t{1} << 30;
  const double utilization = config.gpu_memory_utilization;
  if (!(utilization > 0 && utilization <= 1)) {
    return InvalidArgumentError("gpu_memory_utilization must be in (0, 1], got " +
                                std::to_string(utilization));
  }
  constexpr size_t kHeadroom = size_t{512} << 20;
  const auto [free_bytes, total_bytes] = *memory;
  const size_t used = total_bytes - free_bytes;
  const size_t budget = static_cast<size_t>(utilization * static_cast<double>(total_bytes));
  const double gib = 1073741824.0;
  if (budget <= used + kHeadroom) {
    return ResourceExhaustedError("no GPU memory left for the KV cache: gpu_memory_utilization " +
                                  std::to_string(utilization) + " of " +
                                  std::to_string(total_bytes / gib) +
                                  " GiB, of which weights and activations already use " +
                                  std::to_string(used / gib) + " GiB");
  }
  spdlog::info(
      "GPU memory: {:.1f} GiB; weights and activations {:.1f} GiB; "
      "gpu_memory_utilization {:.2f} leaves {:.1f} GiB for the KV cache",
      total_bytes / gib, used / gib, utilization, (budget - used - kHeadroom) / gib);
  return budget - used - kHeadroom;
}

}  // namespace

size_t kv_page_bytes(const models::ModelConfig& c, int page_tokens) {
  const size_t bf16_token_bytes = 2ull * 2 * c.num_layers * c.num_kv_heads * c.head_dim;
  return bf16_token_bytes * page_tokens;
}

StatusOr<int> kv_cache_pages(const EngineConfig& config, size_t page_bytes,
                             const kernels::Backend& backend) {
  int num_pages = config.num_kv_pages;
  if (num_pages <= 0) {
    ASSIGN_OR_RETURN(const size_t bytes, kv_cache_bytes(config, backend));
    num_pages = static_cast<int>(std::min<size_t>(bytes / page_bytes, INT32_MAX));
  }
  if (num_pages < 1) {
    return InvalidArgumentError("the KV cache holds no page: raise the KV cache size");
  }
  return num_pages;
}

}  // namespace sieve::engine
