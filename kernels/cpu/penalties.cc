// Penalties and token masks (PenaltyArgs in kernels/backend.h), vLLM's semantics: the repetition
// penalty (CTRL, Keskar et al. 2019) divides positive and multiplies negative logits of tokens
// seen in the prompt or the output; the frequency and presence penalties (OpenAI) subtract
// freq * count + pres from tokens generated so far; masked tokens become -inf.
//
// Each step is one rounded f32 operation (no fused multiply-add), so the CUDA kernel, which
// spells out the same operations, gives bit-identical logits.

#include <cmath>

#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

void check_args(const PenaltyArgs& a) {
  SIEVE_CHECK_EQ(a.logits.dtype(), DType::kF32);
  SIEVE_CHECK(a.logits.ndim() == 2 && a.logits.stride(1) == 1) << a.logits.shape_string();
  const int64_t num_rows = a.logits.size(0);
  SIEVE_CHECK_EQ(a.token_indptr.dtype(), DType::kI32);
  SIEVE_CHECK_EQ(a.token_indptr.numel(), num_rows + 1);
  const int64_t num_entries = a.token_indptr.data<int32_t>()[num_rows];
  SIEVE_CHECK_EQ(a.token_ids.dtype(), DType::kI32);
  SIEVE_CHECK_EQ(a.output_counts.dtype(), DType::kI32);
  SIEVE_CHECK_EQ(a.flags.dtype(), DType::kU8);
  SIEVE_CHECK_GE(a.token_ids.numel(), num_entries);
  SIEVE_CHECK_GE(a.output_counts.numel(), num_entries);
  SIEVE_CHECK_GE(a.flags.numel(), num_entries);
  for (const TensorView* v : {&a.repetition_penalty, &a.frequency_penalty, &a.presence_penalty}) {
    SIEVE_CHECK_EQ(v->dtype(), DType::kF32);
    SIEVE_CHECK_EQ(v->numel(), num_rows);
  }
}

void penalize_row(const PenaltyArgs& a, int64_t r) {
  float* logits = a.logits.data<float>() + r * a.logits.stride(0);
  const int64_t vocab = a.logits.size(1);
  const float rep = a.repetition_penalty.data<float>()[r];
  const float freq = a.frequency_penalty.data<float>()[r];
  const float pres = a.presence_penalty.data<float>()[r];
  const int32_t* indptr = a.token_indptr.data<int32_t>();
  for (int32_t i = indptr[r]; i < indptr[r + 1]; ++i) {
    const int32_t token = a.token_ids.data<int32_t>()[i];
    if (token < 0 || token >= vocab) continue;
    const int32_t count = a.output_counts.data<int32_t>()[i];
    const uint8_t flags = a.flags.data<uint8_t>()[i];
    float x = logits[token];
    if ((flags & kPenaltySeen) && rep != 1.0f) x = x > 0 ? x / rep : x * rep;
    if (count > 0 && (freq != 0.0f || pres != 0.0f)) {
      const float scaled = freq * static_cast<float>(count);
      x -= scaled + pres;
    }
    if (flags & kPenaltyMask) x = -INFINITY;
    logits[token] = x;
  }
}

}  // namespace

namespace ref {

void apply_penalties(const PenaltyArgs& a) {
  check_args(a);
  for (int64_t r = 0; r < a.logits.size(0); ++r) penalize_row(a, r);
}

}  // namespace ref

void apply_penalties(const PenaltyArgs& a) {
  check_args(a);
  const int64_t num_rows = a.logits.size(0);
  // Rows touch disjoint logits; a few hundred tokens a row is too little work to share out.
  const int64_t num_entries = a.token_indptr.data<int32_t>()[num_rows];
#pragma omp parallel for schedule(static) if (num_entries > 65536)
  for (int64_t r = 0; r < num_rows; ++r) penalize_row(a, r);
}

}  // namespace sieve::kernels::cpu
