#include "kernels/cpu/cpu_backend.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

class CpuBackend final : public Backend {
 public:
  using Backend::allocate;
  BackendKind kind() const override { return BackendKind::kCpu; }
  std::string name() const override {
    return "cpu (" + std::to_string(omp_get_max_threads()) + " threads, " +
           kernel_level_name(kernel_level()) + " kernels)";
  }

  DType compute_dtype() const override { return DType::kF32; }
  bool takes_block_weights() const override { return true; }
  bool memory_is_host() const override { return true; }

  StatusOr<Tensor> allocate(DType dtype, std::span<const int64_t> shape) override {
    return Tensor::empty(dtype, shape);
  }

  void copy(const TensorView& dst, const TensorView& src) override {
    SIEVE_CHECK(dst.is_contiguous() && src.is_contiguous());
    SIEVE_CHECK_EQ(dst.nbytes(), src.nbytes());
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
  }

  void synchronize() override {}
  void fill_random(const TensorView& out, uint64_t seed, float mean, float std) override {
    cpu::fill_random(out, seed, mean, std);
  }

  void embed(const TensorView& ids, const TensorView& table, const TensorView& out) override {
    cpu::embed(ids, table, out);
  }
  void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight,
                float eps) override {
    cpu::rms_norm(out, x, weight, eps);
  }
  void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                    const TensorView& weight, float eps) override {
    cpu::add_rms_norm(out, residual, x, weight, eps);
  }
  void gemm(const GemmArgs& args) override { cpu::gemm(args); }
  void rope(const RopeArgs& args) override { cpu::rope(args); }
  void silu_mul(const TensorView& out, const TensorView& gate_up) override {
    cpu::silu_mul(out, gate_up);
  }
  void softmax(const TensorView& x) override { cpu::softmax(x); }
  void write_kv(const KvWriteArgs& args) override { cpu::write_kv(args); }
  bool supports_kv_format(kvcache::KvFormatId format) const override {
    (void)format;
    return true;  // every row of kKvFormats
  }
  void copy_pages(const PageCopyArgs& args) override { cpu::copy_pages(args); }
  void compact_kv(const CompactArgs& args) override { cpu::compact_kv(args); }
  void attention(const AttentionArgs& args) override { cpu::attention(args); }
  void copy_rows(const CopyRowsArgs& args) override { cpu::copy_rows(args); }
  void kv_signals(const KvSignalArgs& args) override { cpu::kv_signals(args); }
  void accumulate_query_moments(const QueryMomentArgs& args) override {
    cpu::accumulate_query_moments(args);
  }
  void expected_logits(const ExpectedLogitArgs& args) override { cpu::expected_logits(args); }
  void sample(const SampleArgs& args) override { cpu::sample(args); }
  void apply_penalties(const PenaltyArgs& args) override { cpu::apply_penalties(args); }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  // Programs that do not go through `sieve`'s main (tests, benchmarks) size the pool here too,
  // unless the user did (OpenBLAS, the OpenMP build, shares the pool).
  if (std::getenv("OMP_NUM_THREADS") == nullptr) omp_set_num_threads(cpu_thread_budget());
  return std::make_unique<CpuBackend>();
}

}  // namespace sieve::kernels::cpu
