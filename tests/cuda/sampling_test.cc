// Sampling on the GPU against the CPU backend: both draw u = sample_uniform(seed, step), so for
// the same logits and parameters they must pick the same token, except where float rounding puts
// a cumulative sum on the other side of a boundary (rare on random logits: at most 2 % here).

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/cuda/test_util.h"

namespace sieve::cuda_test {
namespace {

struct Params {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
};

// Samples `rows` rows of `logits` (host f32 [rows, vocab]) with `params` for every row and seeds
// seed0 + row, on the CPU and on the GPU (parameters passed from host or device memory).
std::pair<std::vector<int32_t>, std::vector<int32_t>> sample_both(kernels::Backend& gpu,
                                                                  const Tensor& logits,
                                                                  const Params& params,
                                                                  int64_t seed0, bool host_params) {
  const int64_t rows = logits.size(0);
  std::vector<float> temperature(rows, params.temperature), top_p(rows, params.top_p),
      min_p(rows, params.min_p);
  std::vector<int32_t> top_k(rows, params.top_k), cpu_out(rows), gpu_out(rows, -7);
  std::vector<int64_t> seeds(rows), steps(rows);
  for (int64_t r = 0; r < rows; ++r) {
    seeds[r] = seed0 + r;
    steps[r] = r * 3 + 1;
  }
  auto view = [rows](auto& v, DType dtype) { return TensorView(v.data(), dtype, {rows}); };
  Tensor cpu_logits = Tensor::empty(DType::kF32, {rows, logits.size(1)});
  std::copy_n(logits.data<float>(), logits.numel(), cpu_logits.data<float>());
  kernels::cpu::sample({cpu_logits, view(temperature, DType::kF32), view(top_k, DType::kI32),
                        view(top_p, DType::kF32), view(min_p, DType::kF32),
                        view(seeds, DType::kI64), view(steps, DType::kI64),
                        view(cpu_out, DType::kI32)});

  const Tensor d_logits = upload(gpu, logits, DType::kF32);
  kernels::SampleArgs args{d_logits,
                           view(temperature, DType::kF32),
                           view(top_k, DType::kI32),
                           view(top_p, DType::kF32),
                           view(min_p, DType::kF32),
                           view(seeds, DType::kI64),
                           view(steps, DType::kI64),
                           view(gpu_out, DType::kI32)};
  std::vector<Tensor> keep;  // device copies of the parameters, alive through the call
  if (!host_params) {
    for (TensorView* v : {&args.temperature, &args.top_k, &args.top_p, &args.min_p, &args.seeds,
                          &args.steps, &args.out_tokens}) {
      auto device = gpu.allocate(v->dtype(), {rows});
      SIEVE_CHECK(device.ok());
      gpu.copy(*device, *v);
      keep.push_back(*device);
      *v = *device;
    }
  }
  gpu.sample(args);
  if (!host_params) gpu.copy(view(gpu_out, DType::kI32), args.out_tokens);
  gpu.synchronize();
  return {cpu_out, gpu_out};
}

Tensor random_logits(int64_t rows, int64_t vocab, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor t = Tensor::empty(DType::kF32, {rows, vocab});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

TEST(CudaSampling, GreedyTakesTheFirstArgmax) {
  SIEVE_GPU_OR_SKIP();
  Tensor logits = random_logits(16, 32000, 1, 3.0f);
  // Row 3 has a tie at its maximum: the lower id wins, as on the CPU.
  float* row = logits.data<float>() + 3 * 32000;
  row[100] = row[20000] = 50.0f;
  for (const bool host : {true, false}) {
    const auto [cpu, gpu] = sample_both(*gpu_backend, logits, {0.0f, 0, 1.0f, 0.0f}, 9, host);
    EXPECT_EQ(gpu, cpu);
    EXPECT_EQ(gpu[3], 100);
  }
  // The row maximum is found over slices of the row: vocabularies smaller than the slice count
  // (empty slices) and not a multiple of it, the maximum in the last slice or the last element.
  for (const int64_t vocab : {int64_t{13}, int64_t{128257}}) {
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab);
    Tensor odd = random_logits(3, vocab, 5, 3.0f);
    odd.data<float>()[vocab - 1] = 60.0f;
    odd.data<float>()[vocab + vocab / 2] = 60.0f;
    odd.data<float>()[2 * vocab + vocab - 2] = 60.0f;
    odd.data<float>()[2 * vocab + vocab - 1] = 60.0f;
    const auto [cpu, gpu] = sample_both(*gpu_backend, odd, {0.0f, 0, 1.0f, 0.0f}, 9, true);
    EXPECT_EQ(gpu, cpu);
    EXPECT_EQ(gpu, (std::vector<int32_t>{static_cast<int32_t>(vocab - 1),
                                         static_cast<int32_t>(vocab / 2),
                                         static_cast<int32_t>(vocab - 2)}));
  }
}

TEST(CudaSampling, MatchesTheCpuTokenForTheSameDraw) {
  SIEVE_GPU_OR_SKIP();
  const std::vector<Params> settings = {
      {1.0f, 0, 1.0f, 0.0f},    {0.7f, 50, 1.0f, 0.0f}, {1.0f, 0, 0.9f, 0.0f},
      {0.8f, 40, 0.95f, 0.0f},  {1.0f, 0, 1.0f, 0.05f}, {1.3f, 100, 0.8f, 0.02f},
      {1.0f, 1, 1.0f, 0.0f},
  };
  int equal = 0, total = 0;
  for (size_t i = 0; i < settings.size(); ++i) {
    const Params& p = settings[i];
    SCOPED_TRACE(::testing::Message() << "T=" << p.temperature << " k=" << p.top_k
                                      << " p=" << p.top_p << " min_p=" << p.min_p);
    const Tensor logits = random_logits(64, 50000, static_cast<uint32_t>(i) + 3, 2.0f);
    const auto [cpu, gpu] = sample_both(*gpu_backend, logits, p, 1000 * i, i % 2 == 0);
    for (size_t r = 0; r < cpu.size(); ++r) {
      ASSERT_GE(gpu[r], 0);
      ASSERT_LT(gpu[r], 50000);
      equal += gpu[r] == cpu[r];
      ++total;
    }
  }
  std::printf("[ sampling ] GPU token == CPU token for %d of %d draws\n", equal, total);
  EXPECT_GE(equal, total * 98 / 100);
}

TEST(CudaSampling, TopKOneIsGreedyAndDrawsFollowTheSeed) {
  SIEVE_GPU_OR_SKIP();
  const Tensor logits = random_logits(8, 4096, 77, 1.0f);
  const auto [cpu_greedy, gpu_greedy] =
      sample_both(*gpu_backend, logits, {0.0f, 0, 1.0f, 0.0f}, 5, false);
  const auto [cpu_k1, gpu_k1] = sample_both(*gpu_backend, logits, {1.0f, 1, 1.0f, 0.0f}, 5, false);
  EXPECT_EQ(gpu_k1, gpu_greedy);
  // Same seed and step, same token; another seed, (almost surely) other tokens somewhere.
  const auto [cpu_a, gpu_a] = sample_both(*gpu_backend, logits, {1.0f, 0, 1.0f, 0.0f}, 5, true);
  const auto [cpu_b, gpu_b] = sample_both(*gpu_backend, logits, {1.0f, 0, 1.0f, 0.0f}, 5, true);
  const auto [cpu_c, gpu_c] = sample_both(*gpu_backend, logits, {1.0f, 0, 1.0f, 0.0f}, 500, true);
  EXPECT_EQ(gpu_a, gpu_b);
  EXPECT_NE(gpu_a, gpu_c);
}

}  // namespace
}  // namespace sieve::cuda_test
