#include "models/weights.h"

#include <cstring>
#include <optional>

#include "models/gguf/gguf_model.h"
#include "models/gguf/quant.h"

namespace sieve::models {
namespace {

using kernels::Backend;

std::optional<gguf::GgmlType> ggml_type(DType dtype) {
  for (const gguf::GgmlType type :
       {gguf::GgmlType::kQ8_0, gguf::GgmlType::kQ4_0, gguf::GgmlType::kQ4_1, gguf::GgmlType::kQ4_K,
        gguf::GgmlType::kQ5_K, gguf::GgmlType::kQ6_K}) {
    if (gguf::block_dtype(type) == dtype) return type;
  }
  return std::nullopt;
}

// Converts a host tensor of f32, f16, bf16 or a GGUF block format to a contiguous f32 host tensor;
// f32 input is used as it is (no copy: weights are read straight from the mapped file).
StatusOr<Tensor> to_f32(const Tensor& src, const std::string& where) {
  if (src.dtype() == DType::kF32 && src.view().is_contiguous()) return src;
  std::vector<int64_t> shape;
  for (int d = 0; d < src.ndim(); ++d) shape.push_back(src.size(d));
  Tensor out = Tensor::empty(DType::kF32, shape);
  float* dst = out.data<float>();
  const int64_t n = src.numel();
  switch (src.dtype()) {
    case DType::kF32:
      std::memcpy(dst, src.data<float>(), n * sizeof(float));
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src.data<uint16_t>()[i]);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src.data<uint16_t>()[i]);
      break;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: {
      const std::optional<gguf::GgmlType> type = ggml_type(src.dtype());
      RETURN_IF_ERROR(
          gguf::dequantize(*type, static_cast<const std::byte*>(src.view().raw()), n, dst));
      break;
    }
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
      return InvalidArgumentError(where + ": dtype " + std::string(dtype_name(src.dtype())) +
                                  " is not a floating-point weight");
  }
  return out;
}

// Places a host f32 tensor on the backend's device in its compute dtype (a no-op for the CPU
// backend, which computes in f32 on the host, and takes block-format weights as they are).
StatusOr<Tensor> to_device(Tensor host, Backend& backend) {
  const DType dtype = backend.compute_dtype();
  if (backend.memory_is_host() && dtype == DType::kF32) return host;
  SIEVE_CHECK(!is_block_dtype(host.dtype())) << "block weights for " << backend.name();
  std::vector<int64_t> shape;
  for (int d = 0; d < host.ndim(); ++d) shape.push_back(host.size(d));
  if (dtype == DType::kBF16) {
    Tensor converted = Tensor::empty(DType::kBF16, shape);
    for (int64_t i = 0; i < host.numel(); ++i) {
      converted.data<uint16_t>()[i] = f32_to_bf16(host.data<float>()[i]);
    }
    host = std::move(converted);
  }
  SIEVE_CHECK(host.dtype() == dtype) << "no host conversion to " << dtype;
  ASSIGN_OR_RETURN(Tensor device, backend.allocate(dtype, shape));
  backend.copy(device, host);
  return device;
}

class WeightReader {
 public:
  // `keep_blocks`: matrices in a block format come back as they are (the backend multiplies
  // them), everything else as f32.
  WeightReader(const TensorMap& tensors, const std::string& source, bool keep_blocks)
      : tensors_(tensors), source_(source), keep_blocks_(keep_blocks) {}

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

  // The f32 host tensor `name`, which must have exactly `shape`.
  StatusOr<Tensor> get(const std::string& name, std::initializer_list<int64_t> shape) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return NotFoundError(source_ + ": missing tensor '" + name + "'");
    const Tensor& t = it->second;
    bool ok = t.ndim() == static_cast<int>(shape.size());
    int d = 0;
    for (int64_t size : shape) ok = ok && t.size(d++) == size;
    if (!ok) {
      std::string want = "[";
      for (int64_t size : shape) want += (want.size() > 1 ? ", " : "") + std::to_string(size);
      return InvalidArgumentError(source_ + ": tensor '" + name + "' has shape " +
                                  t.view().shape_string() + ", expected " + want + "]");
    }
    if (keep_blocks_ && is_block_dtype(t.dtype())) return t;
    return to_f32(t, source_ + ": tensor '" + name + "'");
  }

  // Rows of several [rows_i, cols] tensors stacked into one [sum rows_i, cols] tensor.
  // Parts in one block format stay in it (rows of blocks stack like rows of floats); parts in
  // different formats are stacked as f32.
  StatusOr<Tensor> stacked(const std::vector<std::pair<std::string, int64_t>>& parts,
                           int64_t cols) const {
    int64_t rows = 0;
    for (const auto& part : parts) rows += part.second;
    std::vector<Tensor> got;
    for (const auto& [name, part_rows] : parts) {
      StatusOr<Tensor> part = cols > 0 ? get(name, {part_rows, cols}) : get(name, {part_rows});
      RETURN_IF_ERROR(part.status());
      got.push_back(*std::move(part));
    }
    DType dtype = got.front().dtype();
    for (Tensor& part : got) {
      if (part.dtype() == dtype) continue;
      dtype = DType::kF32;
      for (Tensor& p : got) {
        ASSIGN_OR_RETURN(p, to_f32(p, source_));
      }
      break;
    }
    Tensor out = cols > 0 ? Tensor::empty(dtype, {rows, cols}) : Tensor::empty(dtype, {rows});
    auto* dst = out.data<std::byte>();
    for (const Tensor& part : got) {
      std::memcpy(dst, part.data<std::byte>(), part.nbytes());
      dst += part.nbytes();
    }
    return out;
  }

 private:
  const TensorMap& tensors_;
  const std::string& source_;
  bool keep_blocks_;
};

}  // namespace

StatusOr<ModelWeights> build_weights(const ModelConfig& c, const TensorMap& tensors,
                                     Backend& backend, const std::string& source,
                                     bool dequantize_blocks) {
  WeightReader r(tensors, source, backend.takes_block_weights() && !dequantize_blocks);
  const int64_t h = c.hidden_size, f = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  ModelWeights w;
  auto place = [&](StatusOr<Tensor> t, Tensor& out) -> Status {
    RETURN_IF_ERROR(t.status());
    ASSIGN_OR_RETURN(out, to_device(*std::move(t), backend));
    return OkStatus();
  };
  RETURN_IF_ERROR(place(r.get("model.embed_tokens.weight", {c.vocab_size, h}), w.embed));
  RETURN_IF_ERROR(place(r.get("model.norm.weight", {h}), w.final_norm));
  if (c.tie_word_embeddings || !r.has("lm_head.weight")) {
    if (!c.tie_word_embeddings) {
      return NotFoundError(source + ": missing tensor 'lm_head.weight' (embeddings are not tied)");
    }
    w.lm_head = w.embed;
  } else {
    RETURN_IF_ERROR(place(r.get("lm_head.weight", {c.vocab_size, h}), w.lm_head));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& lw = w.layers.emplace_back();
    RETURN_IF_ERROR(place(r.get(p + "input_layernorm.weight", {h}), lw.input_norm));
    RETURN_IF_ERROR(place(r.get(p + "post_attention_layernorm.weight", {h}), lw.post_norm));
    RETURN_IF_ERROR(place(r.stacked({{p + "self_attn.q_proj.weight", q},
                                     {p + "self_attn.k_proj.weight", kv},
                                     {p + "self_attn.v_proj.weight", kv}},
                                    h),
                          lw.qkv));
    if (c.attention_bias) {
      RETURN_IF_ERROR(place(r.stacked({{p + "self_attn.q_proj.bias", q},
                                       {p + "self_attn.k_proj.bias", kv},
                                       {p + "self_attn.v_proj.bias", kv}},
                                      0),
                            lw.qkv_bias));
    }
    if (c.qk_norm) {
      RETURN_IF_ERROR(place(r.get(p + "self_attn.q_norm.weight", {c.head_dim}), lw.q_norm));
      RETURN_IF_ERROR(place(r.get(p + "self_attn.k_norm.weight", {c.head_dim}), lw.k_norm));
    }
    RETURN_IF_ERROR(place(r.get(p + "self_attn.o_proj.weight", {h, q}), lw.o_proj));
    RETURN_IF_ERROR(
        place(r.stacked({{p + "mlp.gate_proj.weight", f}, {p + "mlp.up_proj.weight", f}}, h),
              lw.gate_up));
    RETURN_IF_ERROR(place(r.get(p + "mlp.down_proj.weight", {h, f}), lw.down));
  }
  return w;
}

StatusOr<ModelWeights> random_weights(const ModelConfig& c, Backend& backend, uint64_t seed) {
  // Drawn on the device itself: an 8B model's weights never pass through host memory.
  uint64_t tensor_seed = seed;
  auto make = [&](std::initializer_list<int64_t> shape, bool norm) -> StatusOr<Tensor> {
    ASSIGN_OR_RETURN(Tensor t, backend.allocate(backend.compute_dtype(), shape));
    backend.fill_random(t, ++tensor_seed * 0x9e3779b97f4a7c15ull, norm ? 1.0f : 0.0f,
                        norm ? 0.1f : 0.02f);
    return t;
  };
  const int64_t h = c.hidden_size, f = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  ModelWeights w;
  ASSIGN_OR_RETURN(w.embed, make({c.vocab_size, h}, false));
  ASSIGN_OR_RETURN(w.final_norm, make({h}, true));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, make({c.vocab_size, h}, false));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w.layers.emplace_back();
    ASSIGN_OR_RETURN(lw.input_norm, make({h}, true));
    ASSIGN_OR_RETURN(lw.post_norm, make({h}, true));
    ASSIGN_OR_RETURN(lw.qkv, make({q + 2 * kv, h}, false));
    if (c.attention_bias) {
      ASSIGN_OR_RETURN(lw.qkv_bias, make({q + 2 * kv}, false));
    }
    if (c.qk_norm) {
      ASSIGN_OR_RETURN(lw.q_norm, make({c.head_dim}, true));
      ASSIGN_OR_RETURN(lw.k_norm, make({c.head_dim}, true));
    }
    ASSIGN_OR_RETURN(lw.o_proj, make({h, q}, false));
    ASSIGN_OR_RETURN(lw.gate_up, make({2 * f, h}, false));
    ASSIGN_OR_RETURN(lw.down, make({h, f}, false));
  }
  return w;
}

}  // namespace sieve::models
