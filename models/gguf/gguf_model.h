#pragma once
// A llama-family GGUF model (llama, mistral, qwen2, qwen3) read into Sieve's own terms: the
// ModelConfig, every weight dequantized to f32 under its Hugging Face name and in Hugging Face's
// layout, and the tokenizer vocabulary. llama.cpp's converter permutes the rows of Q and K for
// the llama architecture (for ggml's adjacent-pair RoPE); the loader undoes that, so the weights
// equal the Hugging Face checkpoint's (rotate-half RoPE).

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/mapped_file.h"
#include "core/status.h"
#include "core/tensor.h"
#include "models/config.h"
#include "models/gguf/gguf_file.h"
#include "models/tokenizer/vocab.h"

namespace sieve::models::gguf {

struct GgufModel {
  ModelConfig config;
  // HF name -> f32 host tensor, [out_features, in_features] for projections. lm_head.weight is
  // present only when the file has its own output.weight (otherwise config.tie_word_embeddings).
  // With `keep_blocks`, matrices in a block format the CPU backend multiplies (core/dtype.h) keep
  // it: a view of the mapping, or a copy where Q/K rows had to be un-permuted.
  std::map<std::string, Tensor> tensors;
  VocabData vocab;
  std::shared_ptr<MappedFile> file;
};

// Opens, validates and dequantizes the model at `path`. Errors name the file and the key or
// tensor at fault (unsupported architecture, missing tensor, wrong shape, unsupported type).
StatusOr<GgufModel> load_gguf_model(const std::string& path, bool keep_blocks = false);
// The same from a parsed file (model.file is the file's mapping, null for GgufFile::parse).
StatusOr<GgufModel> load_gguf_model(const GgufFile& file, bool keep_blocks = false);

// The Sieve dtype that holds `type`'s blocks as they are, if any.
std::optional<DType> block_dtype(GgmlType type);

// The config from `<arch>.*` metadata and the tensors present (bias, q/k norm, output).
StatusOr<ModelConfig> read_model_config(const GgufFile& file);

// The tokenizer from tokenizer.ggml.* and tokenizer.chat_template.
StatusOr<VocabData> read_vocab(const GgufFile& file);

// Undoes llama.cpp's Q/K row permutation in place: `weight` is [num_heads * head_dim, cols]
// row-major; within each head, row 2*i + j goes back to row j * head_dim / 2 + i.
void unpermute_qk_rows(float* weight, int64_t num_heads, int64_t head_dim, int64_t cols);

}  // namespace sieve::models::gguf
