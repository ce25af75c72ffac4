// ExpectedAttention's ops on the GPU against the CPU backend (whose dense-reference test is
// tests/kernels/moments_test.cc): accumulate_query_moments over bf16 and f32 query rows at the
// fused-QKV stride, in two calls, and expected_logits over random paged caches (shuffled pages,
// head dims 64 and 128, GQA groups 1, 4 and 8, partial rotary dimensions, a compacted sequence,
// with and without the covariance, bf16 and f32 arenas). The same bf16-rounded values go to both
// sides; the slots the op must not read are NaN in both, and the outputs start NaN, so a read of
// a dead slot or a missing write fails, and entries past a head's valid slots must stay NaN.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged.h"
#include "tests/cuda/test_util.h"

namespace sieve::cuda_test {
namespace {

using kernels::ExpectedLogitArgs;
using kernels::KvCacheLayout;

struct MomentCase {
  int kv_heads, group, head_dim, rotary_dim, tpp, num_tokens, num_queries;
  bool compacted, covariance;
  DType kv_dtype, query_dtype;
};

void run_case(const MomentCase& c, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed << ", dim " << c.head_dim << ", group "
                                    << c.group << ", compacted " << c.compacted << ", KV "
                                    << c.kv_dtype << ", q " << c.query_dtype);
  kernels::Backend& gpu = *::sieve::cuda_test::gpu();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int layers = 3, heads = c.kv_heads * c.group, d = c.head_dim, half = c.rotary_dim / 2;
  const int64_t width = int64_t{d} * (d + 1);

  // Queries: per layer rows of a fused-QKV-like buffer, a mean away from zero on some dims.
  const int row_width = heads * d + 2 * c.kv_heads * d;
  Tensor qkv = random_bf16_values({layers, c.num_queries, row_width}, rng);
  for (int64_t i = 0; i < qkv.numel(); i += 7) {
    qkv.data<float>()[i] = round_bf16(qkv.data<float>()[i] + 1.0f);  // stays exact in bf16
  }
  const Tensor d_qkv = upload(gpu, qkv, c.query_dtype);
  Tensor want_moments = Tensor::empty(DType::kF32, {layers, heads, width});
  std::fill_n(want_moments.data<float>(), want_moments.numel(), 0.0f);
  auto zeros = Tensor::empty(DType::kF32, {layers, heads, width});
  std::fill_n(zeros.data<float>(), zeros.numel(), 0.0f);
  const Tensor d_moments = upload(gpu, zeros, DType::kF32);
  const int split = c.num_queries / 2 + 1;
  for (int l = 0; l < layers; ++l) {
    const TensorView q = qkv.view().select(0, l).slice(1, 0, heads * d).unflatten(1, heads, d);
    const TensorView dq = d_qkv.view().select(0, l).slice(1, 0, heads * d).unflatten(1, heads, d);
    for (auto [begin, end] : {std::pair{0, split}, std::pair{split, c.num_queries}}) {
      kernels::cpu::accumulate_query_moments(
          {q.slice(0, begin, end), want_moments.view().select(0, l)});
      gpu.accumulate_query_moments({dq.slice(0, begin, end), d_moments.view().select(0, l)});
    }
  }
  const Tensor got_moments = download(gpu, d_moments);
  EXPECT_LT(relative_error(got_moments, want_moments), 1e-5) << "moment sums";

  // A paged cache; dead and unused slots NaN.
  const int num_seq_pages = (c.num_tokens + c.tpp - 1) / c.tpp;
  const KvCacheLayout cpu_layout{
      layers, c.kv_heads, d, c.tpp, num_seq_pages + 3, DType::kF32, std::nullopt, 0};
  const size_t arena_elems = cpu_layout.arena_bytes() / sizeof(float);
  Tensor arena = Tensor::empty(DType::kF32, {static_cast<int64_t>(arena_elems)});
  std::fill_n(arena.data<float>(), arena_elems, NAN);
  std::vector<int32_t> pool(cpu_layout.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> pages(pool.begin(), pool.begin() + num_seq_pages);
  const kernels::cpu::PagedSlots slots(static_cast<const std::byte*>(arena.view().raw()),
                                       cpu_layout, pages.data());
  int gap_end = c.num_tokens;
  std::vector<int32_t> head_lens(layers * c.kv_heads, c.num_tokens);
  if (c.compacted) {
    gap_end = c.num_tokens - 1 - static_cast<int>(rng() % 20);
    for (int32_t& len : head_lens) len = static_cast<int32_t>(rng() % (gap_end + 1));
    head_lens[0] = 0;
  }
  int slot_stride = 0;
  std::vector<int> valid(layers * c.kv_heads);
  for (int r = 0; r < layers * c.kv_heads; ++r) {
    valid[r] = c.compacted ? head_lens[r] + c.num_tokens - gap_end : c.num_tokens;
    slot_stride = std::max(slot_stride, valid[r]);
  }
  slot_stride += 3;
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < c.kv_heads; ++h) {
      for (int j = 0; j < c.num_tokens; ++j) {
        if (c.compacted && j >= head_lens[l * c.kv_heads + h] && j < gap_end) continue;
        for (int kv = 0; kv < 2; ++kv) {
          const size_t offset = slots.data_offset(l, kv, h, j);
          float* row = arena.data<float>() + offset / sizeof(float);
          for (int i = 0; i < d; ++i) row[i] = round_bf16(0.5f * normal(rng));
        }
      }
    }
  }
  std::vector<float> cos(half), sin(half);
  for (int i = 0; i < half; ++i) {
    cos[i] = static_cast<float>((1.0 - 0.5 * i / half) * std::cos(0.9 * i + 0.2));
    sin[i] = static_cast<float>((1.0 - 0.5 * i / half) * std::sin(0.9 * i + 0.2));
  }
  ExpectedLogitArgs ref;
  ref.arena =
      TensorView(arena.data<float>(), DType::kU8, {static_cast<int64_t>(cpu_layout.arena_bytes())});
  ref.layout = cpu_layout;
  ref.page_table = TensorView(pages.data(), DType::kI32, {num_seq_pages});
  ref.num_tokens = c.num_tokens;
  if (c.compacted) {
    ref.head_lens = TensorView(head_lens.data(), DType::kI32, {layers * c.kv_heads});
    ref.gap_end = gap_end;
  }
  ref.moments = want_moments.view();
  ref.count = c.num_queries;
  ref.rope_cos = TensorView(cos.data(), DType::kF32, {half});
  ref.rope_sin = TensorView(sin.data(), DType::kF32, {half});
  ref.covariance = c.covariance;
  ref.scale = 1.0f / std::sqrt(static_cast<float>(d));
  ref.slot_stride = slot_stride;
  Tensor want = Tensor::empty(DType::kF32, {layers, heads, slot_stride});
  std::fill_n(want.data<float>(), want.numel(), NAN);
  ref.out = want.view();
  kernels::cpu::expected_logits(ref);

  KvCacheLayout gpu_layout = cpu_layout;
  gpu_layout.dtype = c.kv_dtype;
  const Tensor d_arena = upload(gpu, arena, c.kv_dtype);
  const Tensor got = poisoned(gpu, DType::kF32, {layers, heads, slot_stride});
  ExpectedLogitArgs args = ref;
  args.arena = TensorView(d_arena.view().raw(), DType::kU8,
                          {static_cast<int64_t>(gpu_layout.arena_bytes())}, Device::kCuda);
  args.layout = gpu_layout;
  args.moments = d_moments.view();
  args.out = got.view();
  gpu.expected_logits(args);
  const Tensor g = download(gpu, got);

  std::vector<float> g_valid, w_valid;
  int64_t written_past_valid = 0, unwritten = 0;
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < heads; ++h) {
      const int n = valid[l * c.kv_heads + h / c.group];
      const int64_t base = (static_cast<int64_t>(l) * heads + h) * slot_stride;
      for (int v = 0; v < slot_stride; ++v) {
        const float gv = g.data<float>()[base + v];
        if (v >= n) {
          written_past_valid += !std::isnan(gv);
          continue;
        }
        unwritten += std::isnan(gv);
        g_valid.push_back(gv);
        w_valid.push_back(want.data<float>()[base + v]);
      }
    }
  }
  EXPECT_EQ(written_past_valid, 0) << "entries written past the valid slots";
  EXPECT_EQ(unwritten, 0) << "valid entries left NaN";
  ASSERT_FALSE(w_valid.empty());
  // f32 sums on both sides; the GPU subtracts (mu·k')² from k'ᵀE[qqᵀ]k' in f32.
  EXPECT_LT(relative_error(g_valid.data(), w_valid.data(), static_cast<int64_t>(w_valid.size())),
            1e-4);
}

TEST(CudaMoments, SumsAndExpectedLogitsMatchTheCpuBackend) {
  SIEVE_GPU_OR_SKIP();
  run_case({8, 4, 128, 128, 16, 300, 200, false, true, DType::kBF16, DType::kBF16}, 1);
  run_case({2, 8, 64, 64, 16, 97, 65, false, true, DType::kF32, DType::kBF16}, 2);
  run_case({4, 1, 64, 48, 7, 180, 33, true, true, DType::kBF16, DType::kF32}, 3);  // partial
  run_case({2, 4, 128, 128, 16, 260, 40, true, false, DType::kBF16, DType::kBF16}, 4);
}

}  // namespace
}  // namespace sieve::cuda_test
