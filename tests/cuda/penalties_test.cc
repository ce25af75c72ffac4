// Penalties on the GPU against the CPU backend: the kernel spells out the same rounded f32
// operations, so the penalized logits must be equal bit for bit (and -inf where masked), with
// the token lists passed from host memory (staged) or from device memory.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/cuda/test_util.h"

namespace sieve::cuda_test {
namespace {

struct PenaltyCase {
  int64_t num_rows = 0;
  int64_t vocab = 0;
  Tensor logits;  // host f32 [num_rows, vocab]
  std::vector<int32_t> indptr{0}, ids, counts;
  std::vector<uint8_t> flags;
  std::vector<float> rep, freq, pres;
};

// Rows of a large vocabulary with long token lists (a prompt's worth), random flags, counts and
// penalties; some rows with nothing listed, some with every penalty off, some ids out of range.
PenaltyCase random_case(std::mt19937& rng, int64_t num_rows, int64_t vocab) {
  PenaltyCase c;
  c.num_rows = num_rows;
  c.vocab = vocab;
  c.logits = Tensor::empty(DType::kF32, {num_rows, vocab});
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int64_t i = 0; i < c.logits.numel(); ++i) c.logits.data<float>()[i] = normal(rng);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<int32_t> tokens(vocab + 2);
  std::iota(tokens.begin(), tokens.end(), -1);  // -1 and vocab are skipped
  for (int64_t r = 0; r < num_rows; ++r) {
    std::shuffle(tokens.begin(), tokens.end(), rng);
    // At most the vocabulary's ids (plus the two out-of-range ones): each row's ids are unique.
    const int64_t k =
        r % 5 == 4 ? 0
                   : std::min<int64_t>(vocab + 2, std::uniform_int_distribution<int64_t>(1, 3000)(rng));
    for (int64_t i = 0; i < k; ++i) {
      const int32_t count = uniform(rng) < 0.6f ? 0 : static_cast<int32_t>(1 + 40 * uniform(rng));
      uint8_t flags = count > 0 || uniform(rng) < 0.8f ? kernels::kPenaltySeen : 0;
      if (uniform(rng) < 0.02f) flags |= kernels::kPenaltyMask;
      c.ids.push_back(tokens[i]);
      c.counts.push_back(count);
      c.flags.push_back(flags);
    }
    c.indptr.push_back(static_cast<int32_t>(c.ids.size()));
    const bool off = r % 7 == 3;
    c.rep.push_back(off ? 1.0f : 0.8f + uniform(rng));
    c.freq.push_back(off ? 0.0f : 2.0f * uniform(rng) - 1.0f);
    c.pres.push_back(off ? 0.0f : 2.0f * uniform(rng) - 1.0f);
  }
  return c;
}

template <typename T>
TensorView host_view(std::vector<T>& v, DType dtype) {
  return TensorView(v.data(), dtype, {static_cast<int64_t>(v.size())});
}

kernels::PenaltyArgs host_args(PenaltyCase& c, const TensorView& logits) {
  return {logits,
          host_view(c.indptr, DType::kI32),
          host_view(c.ids, DType::kI32),
          host_view(c.counts, DType::kI32),
          host_view(c.flags, DType::kU8),
          host_view(c.rep, DType::kF32),
          host_view(c.freq, DType::kF32),
          host_view(c.pres, DType::kF32)};
}

void expect_bitwise_equal(const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.numel(), want.numel());
  int64_t mismatches = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const float g = got.data<float>()[i], w = want.data<float>()[i];
    if (std::memcmp(&g, &w, sizeof(float)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << "element " << i << ": gpu " << g << ", cpu " << w;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(CudaPenalties, EqualTheCpuBackendBitForBit) {
  SIEVE_GPU_OR_SKIP();
  for (const bool device_lists : {false, true}) {
    for (uint32_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " device lists " << device_lists);
      std::mt19937 rng(seed);
      PenaltyCase c = random_case(rng, 37, 151936);
      Tensor want = Tensor::empty(DType::kF32, {c.num_rows, c.vocab});
      std::copy_n(c.logits.data<float>(), c.logits.numel(), want.data<float>());
      kernels::cpu::apply_penalties(host_args(c, want));

      const Tensor d_logits = upload(*gpu_backend, c.logits, DType::kF32);
      kernels::PenaltyArgs args = host_args(c, d_logits);
      std::vector<Tensor> keep;  // device copies of the lists, alive through the call
      if (device_lists) {
        for (TensorView* v :
             {&args.token_indptr, &args.token_ids, &args.output_counts, &args.flags,
              &args.repetition_penalty, &args.frequency_penalty, &args.presence_penalty}) {
          auto device = gpu_backend->allocate(v->dtype(), {v->numel()});
          ASSERT_TRUE(device.ok());
          gpu_backend->copy(*device, *v);
          keep.push_back(*device);
          *v = *device;
        }
      }
      gpu_backend->apply_penalties(args);
      expect_bitwise_equal(download(*gpu_backend, d_logits), want);
    }
  }
}

TEST(CudaPenalties, StridedRowsAndEmptyBatches) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(11);
  PenaltyCase c = random_case(rng, 6, 1000);
  // Rows 1024 floats apart on the device; the 24 floats past each row must stay NaN.
  Tensor wide = poisoned(*gpu_backend, DType::kF32, {c.num_rows, 1024});
  const TensorView rows = wide.view().slice(1, 0, c.vocab);
  for (int64_t r = 0; r < c.num_rows; ++r) {
    gpu_backend->copy(rows.select(0, r),
                      TensorView(c.logits.data<float>() + r * c.vocab, DType::kF32, {c.vocab}));
  }
  gpu_backend->apply_penalties(host_args(c, rows));
  Tensor want = Tensor::empty(DType::kF32, {c.num_rows, c.vocab});
  std::copy_n(c.logits.data<float>(), c.logits.numel(), want.data<float>());
  kernels::cpu::apply_penalties(host_args(c, want));
  const Tensor got = download(*gpu_backend, wide);
  for (int64_t r = 0; r < c.num_rows; ++r) {
    for (int64_t t = 0; t < 1024; ++t) {
      const float g = got.data<float>()[r * 1024 + t];
      if (t >= c.vocab) {
        ASSERT_TRUE(std::isnan(g)) << r << "," << t;
      } else {
        const float w = want.data<float>()[r * c.vocab + t];
        ASSERT_EQ(std::memcmp(&g, &w, sizeof(float)), 0) << r << "," << t;
      }
    }
  }
  // No rows at all: nothing to do, nothing launched.
  PenaltyCase none;
  gpu_backend->apply_penalties(host_args(none, wide.view().slice(0, 0, 0)));
  gpu_backend->synchronize();
}

// Greedy sampling after the penalties picks what the CPU backend picks (the logits are equal).
TEST(CudaPenalties, GreedyAfterPenaltiesMatchesTheCpu) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(5);
  PenaltyCase c = random_case(rng, 64, 32000);
  const int64_t n = c.num_rows;
  Tensor cpu_logits = Tensor::empty(DType::kF32, {n, c.vocab});
  std::copy_n(c.logits.data<float>(), c.logits.numel(), cpu_logits.data<float>());
  kernels::cpu::apply_penalties(host_args(c, cpu_logits));
  std::vector<float> temperature(n, 0.0f), top_p(n, 1.0f), min_p(n, 0.0f);
  std::vector<int32_t> top_k(n, -1), cpu_out(n), gpu_out(n, -7);
  std::vector<int64_t> seeds(n, 1), steps(n, 0);
  auto args = [&](const TensorView& logits, std::vector<int32_t>& out) {
    return kernels::SampleArgs{logits,
                               host_view(temperature, DType::kF32),
                               host_view(top_k, DType::kI32),
                               host_view(top_p, DType::kF32),
                               host_view(min_p, DType::kF32),
                               host_view(seeds, DType::kI64),
                               host_view(steps, DType::kI64),
                               host_view(out, DType::kI32)};
  };
  kernels::cpu::sample(args(cpu_logits, cpu_out));
  const Tensor d_logits = upload(*gpu_backend, c.logits, DType::kF32);
  gpu_backend->apply_penalties(host_args(c, d_logits));
  gpu_backend->sample(args(d_logits, gpu_out));
  EXPECT_EQ(gpu_out, cpu_out);
}

}  // namespace
}  // namespace sieve::cuda_test
