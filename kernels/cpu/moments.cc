// ExpectedAttention's two ops on the CPU (Backend::accumulate_query_moments, expected_logits):
// the reference for the CUDA kernels and the production CPU path.

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged.h"

namespace sieve::kernels::cpu {

void accumulate_query_moments(const QueryMomentArgs& a) {
  SIEVE_CHECK(a.q.ndim() == 3 && a.q.dtype() == DType::kF32 && a.q.stride(2) == 1 &&
              a.q.stride(1) == a.q.size(2))
      << "queries are f32 rows of whole heads: " << a.q.shape_string();
  const int64_t rows = a.q.size(0), heads = a.q.size(1), d = a.q.size(2);
  const int64_t width = d * (d + 1);
  SIEVE_CHECK(a.moments.dtype() == DType::kF32 && a.moments.is_contiguous() &&
              a.moments.numel() == heads * width)
      << "moments " << a.moments.shape_string() << " for " << heads << " heads of " << d;
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<double> sum(width, 0.0);
    for (int64_t t = 0; t < rows; ++t) {
      const float* q = a.q.data<float>() + t * a.q.stride(0) + h * d;
      for (int64_t i = 0; i < d; ++i) {
        sum[i] += q[i];
        double* outer = sum.data() + d + i * d;
        for (int64_t j = 0; j < d; ++j) outer[j] += double{q[i]} * q[j];
      }
    }
    float* out = a.moments.data<float>() + h * width;
    for (int64_t i = 0; i < width; ++i) out[i] += static_cast<float>(sum[i]);
  }
}

void expected_logits(const ExpectedLogitArgs& a) {
  const KvCacheLayout& layout = a.layout;
  check_kv_layout(layout, a.arena, 0);
  const PagedSlots slots(static_cast<const std::byte*>(a.arena.raw()), layout,
                         a.page_table.data<int32_t>());
  SIEVE_CHECK_LE(a.num_tokens, a.page_table.numel() * layout.tokens_per_page);
  SIEVE_CHECK_GT(a.count, 0) << "no queries in the statistics";
  const int d = layout.head_dim;
  const int64_t width = int64_t{d} * (d + 1);
  SIEVE_CHECK(a.moments.ndim() == 3 && a.moments.dtype() == DType::kF32 &&
              a.moments.is_contiguous() && a.moments.size(0) == layout.num_layers &&
              a.moments.size(2) == width)
      << "moments " << a.moments.shape_string();
  const int num_heads = static_cast<int>(a.moments.size(1));
  SIEVE_CHECK_EQ(num_heads % layout.num_kv_heads, 0);
  const int half = static_cast<int>(a.rope_cos.numel());
  SIEVE_CHECK(a.rope_sin.numel() == half && 2 * half <= d) << "averaged RoPE of " << half;
  SIEVE_CHECK(a.out.dtype() == DType::kF32 &&
              a.out.numel() >= int64_t{layout.num_layers} * num_heads * a.slot_stride);
  const bool compacted = !a.head_lens.empty();
  const int group = num_heads / layout.num_kv_heads;
  const float* rot_cos = a.rope_cos.data<float>();
  const float* rot_sin = a.rope_sin.data<float>();
  const int num_work = layout.num_layers * num_heads;
#pragma omp parallel for schedule(dynamic, 1)
  for (int work = 0; work < num_work; ++work) {
    const int layer = work / num_heads, h = work % num_heads, kv_head = h / group;
    const int list = layer * layout.num_kv_heads + kv_head;
    int64_t prefix_end = a.num_tokens, gap_end = a.num_tokens, count = a.num_tokens;
    if (compacted) {
      prefix_end = a.head_lens.data<int32_t>()[list];
      gap_end = a.gap_end;
      count = prefix_end + a.num_tokens - gap_end;
    }
    SIEVE_CHECK_LE(count, a.slot_stride) << "slot_stride below a head's valid slots";
    // mu and Σ = E[q qᵀ] - mu muᵀ of this head, in double.
    const float* m = a.moments.data<float>() + static_cast<int64_t>(work) * width;
    std::vector<double> mu(d), sigma(static_cast<size_t>(d) * d, 0.0), kr(d);
    std::vector<float> scratch(d);  // a quantized key, dequantized
    for (int i = 0; i < d; ++i) mu[i] = m[i] / static_cast<double>(a.count);
    if (a.covariance) {
      for (int i = 0; i < d; ++i) {
        for (int j = 0; j < d; ++j) {
          sigma[i * d + j] = m[d + i * d + j] / static_cast<double>(a.count) - mu[i] * mu[j];
        }
      }
    }
    const double scale = a.scale;
    float* out = a.out.data<float>() + static_cast<int64_t>(work) * a.slot_stride;
    for (int64_t v = 0; v < count; ++v) {
      const int64_t j = v < prefix_end ? v : gap_end + (v - prefix_end);
      const float* k = slots.read(layer, 0, kv_head, j, scratch.data());
      // k' = Rᵀ k: R's pair block [[c, -s], [s, c]] transposed.
      for (int i = 0; i < d; ++i) kr[i] = k[i];
      for (int i = 0; i < half; ++i) {
        kr[i] = double{rot_cos[i]} * k[i] + double{rot_sin[i]} * k[i + half];
        kr[i + half] = -double{rot_sin[i]} * k[i] + double{rot_cos[i]} * k[i + half];
      }
      double linear = 0, quadratic = 0;
      for (int i = 0; i < d; ++i) linear += mu[i] * kr[i];
      if (a.covariance) {
        for (int i = 0; i < d; ++i) {
          double row = 0;
          for (int jj = 0; jj < d; ++jj) row += sigma[i * d + jj] * kr[jj];
          quadratic += kr[i] * row;
        }
      }
      out[v] = static_cast<float>(scale * linear + 0.5 * scale * scale * quadratic);
    }
  }
}

}  // namespace sieve::kernels::cpu
