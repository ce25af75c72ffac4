// The CUDA backend's dense ops against the CPU reference (kernels/cpu ref::) on fresh seeded
// random inputs rounded to bf16, with NaN-poisoned outputs: embed, rms_norm, add_rms_norm, gemm
// (fused bias, f32 logits, strided operands, the unaligned fallback), rope (strided q/k views,
// per-token frequencies, partial rotary), silu_mul, softmax and fill_random.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/cuda/test_util.h"

namespace sieve::cuda_test {
namespace {

using kernels::GemmArgs;
using kernels::RopeArgs;

TEST(CudaOps, EmbedGathersRowsExactly) {
  SIEVE_GPU_OR_SKIP();
  for (const uint32_t seed : {1u, 2u}) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937 rng(seed);
    const int64_t vocab = 1000, hidden = seed == 1 ? 256 : 72;
    const Tensor table = random_bf16_values({vocab, hidden}, rng);
    std::vector<int32_t> ids(37);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
    const Tensor d_table = upload(*gpu_backend, table, DType::kBF16);
    const Tensor d_ids = upload_i32(*gpu_backend, ids);
    const Tensor out = poisoned(*gpu_backend, DType::kBF16, {37, hidden});
    gpu_backend->embed(d_ids, d_table, out);
    Tensor want = Tensor::empty(DType::kF32, {37, hidden});
    kernels::cpu::ref::embed(TensorView(ids.data(), DType::kI32, {37}), table, want);
    EXPECT_EQ(relative_error(download(*gpu_backend, out), want), 0.0);
  }
}

// rows x width norms: hidden-size rows (block path), head rows of a strided [T, H, D] view in place
// (warp path), and a width that is not whole 16-byte vectors (scalar path).
TEST(CudaOps, RmsNormMatchesReference) {
  SIEVE_GPU_OR_SKIP();
  struct Case {
    int64_t rows, width;
  };
  for (const Case c : {Case{7, 4096}, Case{33, 100}, Case{5, 2048}}) {
    SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.width);
    std::mt19937 rng(static_cast<uint32_t>(c.width));
    const Tensor x = random_bf16_values({c.rows, c.width}, rng, 2.0f);
    const Tensor w = random_bf16_values({c.width}, rng);
    const Tensor out = poisoned(*gpu_backend, DType::kBF16, {c.rows, c.width});
    gpu_backend->rms_norm(out, upload(*gpu_backend, x, DType::kBF16),
                          upload(*gpu_backend, w, DType::kBF16), 1e-5f);
    Tensor want = Tensor::empty(DType::kF32, {c.rows, c.width});
    kernels::cpu::ref::rms_norm(want, x, w, 1e-5f);
    EXPECT_LT(relative_error(download(*gpu_backend, out), want), kBf16Tolerance);
  }
  // Per-head q norm in place on the q part of a fused [T, q + 2 kv] buffer.
  std::mt19937 rng(7);
  const int64_t tokens = 9, heads = 8, dim = 128, width = heads * dim + 2 * 2 * dim;
  Tensor fused = random_bf16_values({tokens, width}, rng);
  const Tensor w = random_bf16_values({dim}, rng);
  const Tensor d_fused = upload(*gpu_backend, fused, DType::kBF16);
  const TensorView q = d_fused.view().slice(1, 0, heads * dim).unflatten(1, heads, dim);
  gpu_backend->rms_norm(q, q, upload(*gpu_backend, w, DType::kBF16), 1e-6f);
  const TensorView host_q = fused.view().slice(1, 0, heads * dim).unflatten(1, heads, dim);
  kernels::cpu::ref::rms_norm(host_q, host_q, w, 1e-6f);
  EXPECT_LT(relative_error(download(*gpu_backend, d_fused), fused), kBf16Tolerance);
}

TEST(CudaOps, AddRmsNormUpdatesResidualAndNormalizes) {
  SIEVE_GPU_OR_SKIP();
  for (const int64_t width : {int64_t{4096}, int64_t{144}, int64_t{90}}) {
    SCOPED_TRACE(::testing::Message() << "width " << width);
    std::mt19937 rng(static_cast<uint32_t>(width) + 11);
    const int64_t rows = 6;
    Tensor residual = random_bf16_values({rows, width}, rng);
    const Tensor x = random_bf16_values({rows, width}, rng);
    const Tensor w = random_bf16_values({width}, rng);
    const Tensor d_residual = upload(*gpu_backend, residual, DType::kBF16);
    const Tensor out = poisoned(*gpu_backend, DType::kBF16, {rows, width});
    gpu_backend->add_rms_norm(out, d_residual, upload(*gpu_backend, x, DType::kBF16),
                              upload(*gpu_backend, w, DType::kBF16), 1e-5f);
    Tensor want = Tensor::empty(DType::kF32, {rows, width});
    kernels::cpu::ref::add_rms_norm(want, residual, x, w, 1e-5f);
    EXPECT_LT(relative_error(download(*gpu_backend, out), want), kBf16Tolerance);
    EXPECT_LT(relative_error(download(*gpu_backend, d_residual), residual), kBf16Tolerance);
  }
}

// One GEMM case: y[m, n] = x[m, k]·w[n, k]ᵀ (+ bias), x read through a view `x_pad` columns wider
// than k (a strided operand), y of `y_dtype`.
void check_gemm(kernels::Backend& gpu, int64_t m, int64_t n, int64_t k, bool bias, DType y_dtype,
                int64_t x_pad, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "m=" << m << " n=" << n << " k=" << k << " bias=" << bias
                                    << " y=" << y_dtype << " pad=" << x_pad);
  std::mt19937 rng(seed);
  const Tensor x_full = random_bf16_values({m, k + x_pad}, rng);
  const Tensor w = random_bf16_values({n, k}, rng, 0.05f);
  const Tensor b = random_bf16_values({n}, rng);
  const Tensor d_x = upload(gpu, x_full, DType::kBF16);
  const Tensor d_w = upload(gpu, w, DType::kBF16);
  const Tensor d_b = upload(gpu, b, DType::kBF16);
  const Tensor y = poisoned(gpu, y_dtype, {m, n});
  gpu.gemm(GemmArgs{d_x.view().slice(1, x_pad, x_pad + k), d_w, bias ? d_b.view() : TensorView(),
                    y});
  Tensor want = Tensor::empty(DType::kF32, {m, n});
  kernels::cpu::ref::gemm(GemmArgs{x_full.view().slice(1, x_pad, x_pad + k), w,
                                   bias ? b.view() : TensorView(), want});
  EXPECT_LT(relative_error(download(gpu, y), want), kBf16Tolerance);
}

TEST(CudaOps, GemmMatchesReference) {
  SIEVE_GPU_OR_SKIP();
  check_gemm(*gpu_backend, 1, 1024, 512, true, DType::kBF16, 0, 1);     // decode, fused bias
  check_gemm(*gpu_backend, 77, 384, 256, true, DType::kBF16, 0, 2);     // prefill, fused bias
  check_gemm(*gpu_backend, 64, 512, 768, false, DType::kBF16, 64, 3);   // strided x
  check_gemm(*gpu_backend, 3, 1000, 256, false, DType::kF32, 0, 4);     // f32 logits
  check_gemm(*gpu_backend, 5, 96, 128, true, DType::kF32, 0, 5);        // bias kernel, f32 out
  check_gemm(*gpu_backend, 9, 40, 33, true, DType::kBF16, 3, 6);        // unaligned: fallback
  // The GEMV kernel (M <= 4): long k, n not a multiple of its rows, strided x, both outputs.
  check_gemm(*gpu_backend, 1, 4099, 4096, false, DType::kBF16, 0, 7);
  check_gemm(*gpu_backend, 2, 1030, 2048, true, DType::kF32, 8, 8);
  check_gemm(*gpu_backend, 4, 515, 14336, true, DType::kBF16, 16, 9);
  check_gemm(*gpu_backend, 3, 7, 8, false, DType::kF32, 0, 10);
}

// RoPE on strided q/k views of a fused QKV buffer: full and partial rotary, shared and per-token
// frequencies, attention scaling, positions up to 8k.
TEST(CudaOps, RopeMatchesReferenceOnStridedViews) {
  SIEVE_GPU_OR_SKIP();
  struct Case {
    int64_t heads, kv_heads, dim, rotary;
    bool per_token;
    float scaling;
  };
  for (const Case c : {Case{8, 2, 128, 128, false, 1.0f}, Case{4, 4, 64, 32, true, 1.2f},
                       Case{9, 3, 16, 16, false, 1.0f}}) {
    SCOPED_TRACE(::testing::Message() << "heads " << c.heads << "/" << c.kv_heads << " dim "
                                      << c.dim << " rotary " << c.rotary);
    std::mt19937 rng(static_cast<uint32_t>(c.dim * 7 + c.heads));
    const int64_t tokens = 13, half = c.rotary / 2;
    const int64_t q_dim = c.heads * c.dim, kv_dim = c.kv_heads * c.dim;
    Tensor fused = random_bf16_values({tokens, q_dim + 2 * kv_dim}, rng);
    std::vector<int32_t> positions(tokens);
    for (int32_t& p : positions) p = static_cast<int32_t>(rng() % 8192);
    Tensor inv_freq = Tensor::empty(DType::kF32, {c.per_token ? tokens : 1, half});
    for (int64_t i = 0; i < inv_freq.numel(); ++i) {
      inv_freq.data<float>()[i] = std::pow(10000.0f, -2.0f * (i % half) / c.rotary) *
                                  (1.0f + 0.1f * static_cast<float>(i / half));
    }
    const TensorView freq_view =
        c.per_token ? inv_freq.view() : inv_freq.view().select(0, 0);
    auto views = [&](const TensorView& buffer) {
      return std::pair{buffer.slice(1, 0, q_dim).unflatten(1, c.heads, c.dim).slice(2, 0, c.rotary),
                       buffer.slice(1, q_dim, q_dim + kv_dim)
                           .unflatten(1, c.kv_heads, c.dim)
                           .slice(2, 0, c.rotary)};
    };
    const Tensor d_fused = upload(*gpu_backend, fused, DType::kBF16);
    const Tensor d_freq = upload(*gpu_backend, inv_freq, DType::kF32);
    const Tensor d_positions = upload_i32(*gpu_backend, positions);
    const auto [dq, dk] = views(d_fused);
    gpu_backend->rope(RopeArgs{dq, dk, d_positions,
                               c.per_token ? d_freq.view() : d_freq.view().select(0, 0),
                               c.scaling});
    const auto [hq, hk] = views(fused);
    kernels::cpu::ref::rope(RopeArgs{hq, hk, TensorView(positions.data(), DType::kI32, {tokens}),
                                     freq_view, c.scaling});
    EXPECT_LT(relative_error(download(*gpu_backend, d_fused), fused), kBf16Tolerance);
  }
}

TEST(CudaOps, SiluMulMatchesReference) {
  SIEVE_GPU_OR_SKIP();
  for (const int64_t f : {int64_t{1408}, int64_t{84}, int64_t{13}}) {
    SCOPED_TRACE(::testing::Message() << "f " << f);
    std::mt19937 rng(static_cast<uint32_t>(f));
    const Tensor gate_up = random_bf16_values({11, 2 * f}, rng, 3.0f);
    const Tensor out = poisoned(*gpu_backend, DType::kBF16, {11, f});
    gpu_backend->silu_mul(out, upload(*gpu_backend, gate_up, DType::kBF16));
    Tensor want = Tensor::empty(DType::kF32, {11, f});
    kernels::cpu::ref::silu_mul(want, gate_up);
    EXPECT_LT(relative_error(download(*gpu_backend, out), want), kBf16Tolerance);
  }
}

TEST(CudaOps, SoftmaxMatchesReferenceInF32AndBf16) {
  SIEVE_GPU_OR_SKIP();
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    std::mt19937 rng(dtype == DType::kF32 ? 3 : 4);
    Tensor x = random_bf16_values({6, 3000}, rng, 4.0f);
    const Tensor d_x = upload(*gpu_backend, x, dtype);
    gpu_backend->softmax(d_x);
    kernels::cpu::ref::softmax(x);
    EXPECT_LT(relative_error(download(*gpu_backend, d_x), x),
              dtype == DType::kF32 ? 1e-5 : kBf16Tolerance);
  }
}

// Same formula as the CPU backend (not necessarily the same last bit), deterministic, moments.
TEST(CudaOps, FillRandomFollowsTheCpuFormula) {
  SIEVE_GPU_OR_SKIP();
  const int64_t n = 100003;
  auto d_a = gpu_backend->allocate(DType::kF32, {n});
  auto d_b = gpu_backend->allocate(DType::kBF16, {n});
  ASSERT_TRUE(d_a.ok() && d_b.ok());
  gpu_backend->fill_random(*d_a, 42, 0.5f, 0.02f);
  gpu_backend->fill_random(*d_b, 42, 0.5f, 0.02f);
  Tensor want = Tensor::empty(DType::kF32, {n});
  kernels::cpu::fill_random(want, 42, 0.5f, 0.02f);
  EXPECT_LT(relative_error(download(*gpu_backend, *d_a), want), 1e-6);
  EXPECT_LT(relative_error(download(*gpu_backend, *d_b), want), 1e-2);
  gpu_backend->fill_random(*d_b, 43, 0.5f, 0.02f);
  EXPECT_GT(relative_error(download(*gpu_backend, *d_b), want), 1e-3);  // another seed differs
}

}  // namespace
}  // namespace sieve::cuda_test
