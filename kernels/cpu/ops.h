#pragma once
// The CPU ops. `ref::` holds the scalar fp32 specification of each op, which every other path
// (the production CPU path here, the CUDA kernels) is tested against; the unqualified functions
// are the production CPU path: the same math, parallel over rows (OpenMP) and through BLAS.

#include "kernels/backend.h"

namespace sieve::kernels::cpu {

namespace ref {
void embed(const TensorView& ids, const TensorView& table, const TensorView& out);
void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, float eps);
void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                  const TensorView& weight, float eps);
void gemm(const GemmArgs& args);  // accumulates in double
void rope(const RopeArgs& args);
void silu_mul(const TensorView& out, const TensorView& gate_up);
void softmax(const TensorView& x);
void write_kv(const KvWriteArgs& args);
void attention(const AttentionArgs& args);
void apply_penalties(const PenaltyArgs& args);
void kv_signals(const KvSignalArgs& args);
}  // namespace ref

void embed(const TensorView& ids, const TensorView& table, const TensorView& out);
void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, float eps);
void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                  const TensorView& weight, float eps);
void gemm(const GemmArgs& args);  // cblas_sgemm
void rope(const RopeArgs& args);
void silu_mul(const TensorView& out, const TensorView& gate_up);
void softmax(const TensorView& x);
void write_kv(const KvWriteArgs& args);
void copy_pages(const PageCopyArgs& args);
void compact_kv(const CompactArgs& args);
void attention(const AttentionArgs& args);
void copy_rows(const CopyRowsArgs& args);
void kv_signals(const KvSignalArgs& args);                   // parallel over (layer, KV head)
void accumulate_query_moments(const QueryMomentArgs& args);  // sums in double
void expected_logits(const ExpectedLogitArgs& args);         // parallel over (layer, query head)
void sample(const SampleArgs& args);
void apply_penalties(const PenaltyArgs& args);  // rows in parallel

void fill_random(const TensorView& out, uint64_t seed, float mean, float std);

// The uniform draw in [0, 1) of a sequence's `step`-th token: a counter-based hash of (seed,
// step), so a draw never depends on the batch around it.
double sample_uniform(uint64_t seed, uint64_t step);

}  // namespace sieve::kernels::cpu
