// The CUDA backend's dense ops against the CPU reference (kernels/cpu ref::) on fresh seeded
// random inputs rounded to bf16, with NaN-poisoned outputs: embed, rms_norm, add_rms_norm, gemm
// (fused bias, f32 logits, strided operands, the unaligned fallback), rope (strided q/k views,
// per-token frequencies, partial rotary), the fused rope + write_kv, silu_mul, softmax and
// fill_random.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/cuda/test_util.h"

namespace sieve::cuda_test {
namespace {

using kernels::GemmArgs;
using kernels::KvCacheLayout;
using kernels::KvWriteArgs;
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

// rows x width norms: hidden-size rows (held in registers up to 8192 wide, partly filled at 3584,
// the two-pass block path past that), head rows of a strided [T, H, D] view in place (warp path),
// and a width that is not whole 16-byte vectors (scalar path).
TEST(CudaOps, RmsNormMatchesReference) {
  SIEVE_GPU_OR_SKIP();
  struct Case {
    int64_t rows, width;
  };
  for (const Case c : {Case{7, 4096}, Case{33, 100}, Case{5, 2048}, Case{3, 3584}, Case{2, 8192},
                       Case{2, 16384}}) {
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
  for (const int64_t width :
       {int64_t{4096}, int64_t{3584}, int64_t{10240}, int64_t{144}, int64_t{90}}) {
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

// The fused rope_write_kv: exactly the GPU's rope followed by its write_kv (same arena bits, same
// q and k), and within bf16 tolerance of the CPU's, for few tokens (a token's heads split over
// blocks, some blocks holding both q and k heads) and many (one block a token), partial rotary,
// skipped slots (-1), bf16 and f32 arenas; slots nobody writes stay NaN.
TEST(CudaOps, RopeWriteKvEqualsRopeThenWriteKv) {
  SIEVE_GPU_OR_SKIP();
  const int64_t heads = 6, kv_heads = 2, dim = 128, rotary = 64, half = rotary / 2;
  const int64_t q_dim = heads * dim, kv_dim = kv_heads * dim;
  const int num_layers = 2, tpp = 16, pages = 10, layer = 1;
  for (const DType kv_dtype : {DType::kBF16, DType::kF32}) {
    for (const int64_t tokens : {int64_t{3}, int64_t{70}}) {
      SCOPED_TRACE(::testing::Message() << "KV " << kv_dtype << ", " << tokens << " tokens");
      std::mt19937 rng(static_cast<uint32_t>(tokens) + (kv_dtype == DType::kBF16 ? 0 : 100));
      Tensor fused = random_bf16_values({tokens, q_dim + 2 * kv_dim}, rng);
      std::vector<int32_t> positions(tokens), slots(tokens);
      std::vector<int32_t> all(pages * tpp);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      for (int64_t t = 0; t < tokens; ++t) {
        positions[t] = static_cast<int32_t>(rng() % 4096);
        slots[t] = t % 5 == 2 ? -1 : all[t];
      }
      Tensor inv_freq = Tensor::empty(DType::kF32, {half});
      for (int64_t i = 0; i < half; ++i) {
        inv_freq.data<float>()[i] = std::pow(10000.0f, -2.0f * i / rotary);
      }
      auto qkv = [&](const TensorView& buffer) {
        return std::tuple{
            buffer.slice(1, 0, q_dim).unflatten(1, heads, dim),
            buffer.slice(1, q_dim, q_dim + kv_dim).unflatten(1, kv_heads, dim),
            buffer.slice(1, q_dim + kv_dim, q_dim + 2 * kv_dim).unflatten(1, kv_heads, dim)};
      };
      KvCacheLayout layout{num_layers,
                           static_cast<int>(kv_heads),
                           static_cast<int>(dim),
                           tpp,
                           pages,
                           DType::kF32,
                           std::nullopt,
                           0};
      const int64_t elems = static_cast<int64_t>(layout.arena_bytes() / 4);
      Tensor arena = Tensor::empty(DType::kF32, {elems});
      std::fill_n(arena.data<float>(), elems, NAN);
      KvCacheLayout gpu_layout = layout;
      gpu_layout.dtype = kv_dtype;
      const Tensor d_freq = upload(*gpu_backend, inv_freq, DType::kF32);
      const Tensor d_positions = upload_i32(*gpu_backend, positions);
      const Tensor d_slots = upload_i32(*gpu_backend, slots);
      // Runs the step on the GPU, fused or as two ops; returns (q k v buffer, arena) on the host.
      auto run = [&](bool fused_op) {
        const Tensor d_fused = upload(*gpu_backend, fused, DType::kBF16);
        const Tensor d_typed = upload(*gpu_backend, arena, kv_dtype);
        const TensorView d_arena(d_typed.view().raw(), DType::kU8,
                                 {static_cast<int64_t>(gpu_layout.arena_bytes())}, Device::kCuda);
        const auto [q, k, v] = qkv(d_fused.view());
        const RopeArgs r{q.slice(2, 0, rotary), k.slice(2, 0, rotary), d_positions, d_freq, 1.0f};
        const KvWriteArgs w{k, v, d_slots, d_arena, gpu_layout, layer, {}, {}};
        if (fused_op) {
          gpu_backend->rope_write_kv(r, w);
        } else {
          gpu_backend->rope(r);
          gpu_backend->write_kv(w);
        }
        return std::pair{download(*gpu_backend, d_fused), download(*gpu_backend, d_typed)};
      };
      const auto [fused_rows, fused_arena] = run(true);
      const auto [split_rows, split_arena] = run(false);
      auto bits_equal = [](const Tensor& a, const Tensor& b) {
        return a.numel() == b.numel() &&
               std::memcmp(a.data<float>(), b.data<float>(), a.numel() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(bits_equal(fused_rows, split_rows));
      EXPECT_TRUE(bits_equal(fused_arena, split_arena));

      const auto [hq, hk, hv] = qkv(fused.view());
      kernels::cpu::ref::rope(RopeArgs{hq.slice(2, 0, rotary), hk.slice(2, 0, rotary),
                                       TensorView(positions.data(), DType::kI32, {tokens}),
                                       inv_freq, 1.0f});
      kernels::cpu::write_kv(
          {hk, hv, TensorView(slots.data(), DType::kI32, {tokens}), arena, layout, layer, {}, {}});
      EXPECT_LT(relative_error(fused_rows, fused), kBf16Tolerance);
      // Written slots within tolerance, the others still NaN on both sides.
      Tensor got = fused_arena, want = arena;
      int64_t nan_mismatches = 0, written = 0;
      for (int64_t i = 0; i < elems; ++i) {
        float& a = got.data<float>()[i];
        float& b = want.data<float>()[i];
        if (std::isnan(a) != std::isnan(b)) ++nan_mismatches;
        if (std::isnan(b)) {
          a = b = 0.0f;
        } else {
          ++written;
        }
      }
      EXPECT_EQ(nan_mismatches, 0);
      EXPECT_EQ(written, (tokens - (tokens + 2) / 5) * 2 * kv_dim);
      EXPECT_LT(relative_error(got, want), kBf16Tolerance);
    }
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
