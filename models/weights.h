#pragma once
// The runner's weights: Hugging Face tensors checked against the config, converted to the
// backend's compute dtype, with q/k/v and gate/up fused into one matrix each.

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "models/config.h"
#include "models/safetensors.h"

namespace sieve::models {

struct LayerWeights {
  Tensor input_norm;  // [hidden]
  Tensor qkv;         // [q_dim + 2 * kv_dim, hidden]: rows of q_proj, then k_proj, then v_proj
  Tensor qkv_bias;    // [q_dim + 2 * kv_dim] or empty
  Tensor q_norm;      // [head_dim] or empty (Qwen3)
  Tensor k_norm;      // [head_dim] or empty (Qwen3)
  Tensor o_proj;      // [hidden, q_dim]
  Tensor post_norm;   // [hidden]
  Tensor gate_up;     // [2 * intermediate, hidden]: rows of gate_proj, then up_proj
  Tensor down;        // [hidden, intermediate]
};

struct ModelWeights {
  Tensor embed;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; the embedding itself when tied
};

// Every missing tensor or wrong shape is an error naming `source` and the tensor. Matrices in a
// GGUF block format stay in it on a backend that takes them (the CPU: int8 activations, the
// tolerance in kernels/cpu/quant_gemm.h) unless `dequantize_blocks` asks for f32 weights, the
// exact reference (tests against transformers' decisions).
StatusOr<ModelWeights> build_weights(const ModelConfig& config, const TensorMap& tensors,
                                     kernels::Backend& backend, const std::string& source,
                                     bool dequantize_blocks = false);

// Random weights at the config's shapes (`--load-format dummy`), drawn on the backend: mean 0
// and std 0.02 for the matrices, mean 1 and std 0.1 for the norms, from `seed`.
StatusOr<ModelWeights> random_weights(const ModelConfig& config, kernels::Backend& backend,
                                      uint64_t seed);

}  // namespace sieve::models
