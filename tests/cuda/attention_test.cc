// Paged attention and the KV cache ops on the GPU against the CPU backend. The same random keys
// and values (bf16-rounded) are placed in a CPU f32 arena and in the GPU arena (bf16 or f32) at
// shuffled pages; every slot no sequence may read is NaN in both, so a kernel that reads past a
// length or a causal limit fails. Cases: several sequences, GQA 4:1 / 3:1 and 1:1, head_dim 64,
// 128 and the generic 16/48, decode rows and prefill chunks over history in one batch, long
// contexts (split-K and its combine), long prompts on the tensor-core kernel, compacted sequences
// (per-(layer, KV head) survivors, a dead gap, then the tokens appended since), odd page sizes,
// and the compression hooks: a per-slot logit bias (some sequences without one, their bias NaN;
// some slots at -inf) and selected slots (unselected slots NaN like the dead ones), on the FMA
// kernel (decode rows, generic head dims) and the tensor-core kernel (prefill chunks).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/cuda/test_util.h"

namespace sieve::cuda_test {
namespace {

using kernels::AttentionArgs;
using kernels::KvCacheLayout;

struct Seq {
  int kv_len;  // slots including this step's tokens
  int q_len;   // this step's tokens
};

struct Case {
  std::vector<Seq> seqs;
  int num_heads, num_kv_heads, head_dim, tokens_per_page;
  bool per_head_lens = false;
  DType kv_dtype = DType::kBF16;
  bool q_len_bounds = false;  // pass the host's min/max q_len (kernel classes are skipped)
  bool bias = false;          // a per-slot logit bias
  bool select = false;        // selected slots
};

// The slot offset (in elements) of (layer, page, K or V, head, slot in page).
size_t slot_elem(const KvCacheLayout& l, int layer, int page, int kv, int head, int offset) {
  return ((static_cast<size_t>(layer) * l.num_pages + page) * 2 * l.num_kv_heads * l.tokens_per_page +
          (static_cast<size_t>(kv) * l.num_kv_heads + head) * l.tokens_per_page + offset) *
         l.head_dim;
}

void run_case(const Case& c, uint32_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "seed " << seed << ", heads " << c.num_heads << "/" << c.num_kv_heads << ", dim "
               << c.head_dim << ", tpp " << c.tokens_per_page << ", KV " << c.kv_dtype << ", bias "
               << c.bias << ", select " << c.select);
  kernels::Backend& gpu = *::sieve::cuda_test::gpu();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int num_seqs = static_cast<int>(c.seqs.size());
  const int num_layers = 2, layer = 1, tpp = c.tokens_per_page, dim = c.head_dim;
  int total_pages = 0;
  for (const Seq& s : c.seqs) total_pages += (s.kv_len + tpp - 1) / tpp;
  const KvCacheLayout cpu_layout{num_layers,      c.num_kv_heads, dim,          tpp,
                                 total_pages + 5, DType::kF32,    std::nullopt, 0};
  const size_t arena_elems = cpu_layout.arena_bytes() / sizeof(float);
  std::vector<float> arena(arena_elems, NAN);
  std::vector<int32_t> pool(cpu_layout.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);

  std::vector<int32_t> qo_indptr{0}, kv_indptr{0}, kv_indices, kv_lens, head_lens, gap_ends;
  int next_page = 0;
  for (const Seq& s : c.seqs) {
    qo_indptr.push_back(qo_indptr.back() + s.q_len);
    const int pages = (s.kv_len + tpp - 1) / tpp;
    for (int p = 0; p < pages; ++p) kv_indices.push_back(pool[next_page++]);
    kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
    kv_lens.push_back(s.kv_len);
    // Compacted: head survivors [0, head_len), dead [head_len, gap_end), then the slots appended
    // since, up to kv_len (this step's tokens among them).
    const int history = s.kv_len - s.q_len;
    const int gap_end = c.per_head_lens ? history - static_cast<int>(rng() % (history / 2 + 1))
                                        : s.kv_len;
    gap_ends.push_back(gap_end);
    for (int l = 0; l < num_layers; ++l) {
      for (int h = 0; h < c.num_kv_heads; ++h) {
        head_lens.push_back(c.per_head_lens ? static_cast<int>(rng() % (gap_end + 1)) : s.kv_len);
      }
    }
  }
  // The hooks, from their own generator (the cases without hooks keep their data): most
  // sequences get a bias (a few history slots -inf), most (sequence, KV head) lists a selection
  // of a random density (the others select nothing: all slots).
  std::mt19937 hook_rng(seed + 7919);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  std::vector<float> bias(c.bias ? arena_elems / (2 * dim) : 0, NAN);  // one per (K, V) row pair
  std::vector<int32_t> bias_seqs, selected_indptr{0}, selected_slots;
  for (int s = 0; s < num_seqs; ++s) bias_seqs.push_back(c.bias && hook_rng() % 4 != 0);
  // Valid slots get values; the rest of every page (dead gaps, unselected slots) stays NaN.
  for (int s = 0; s < num_seqs; ++s) {
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const int head_len = head_lens[(s * num_layers + layer) * c.num_kv_heads + h];
      const int kv_len = c.seqs[s].kv_len, history = kv_len - c.seqs[s].q_len;
      const int valid = std::min(head_len, kv_len) + std::max(0, kv_len - gap_ends[s]);
      std::vector<bool> selected(valid, true);
      if (c.select && hook_rng() % 4 != 0) {
        const uint32_t density = 1 + hook_rng() % 7;  // in eighths
        std::vector<int32_t> list;
        for (int v = 0; v < valid; ++v) {
          if (hook_rng() % 8 < density) list.push_back(v);
        }
        if (!list.empty()) {  // an empty draw stays "all slots"
          selected.assign(valid, false);
          for (const int32_t v : list) selected[v] = true;
          selected_slots.insert(selected_slots.end(), list.begin(), list.end());
        }
      }
      selected_indptr.push_back(static_cast<int32_t>(selected_slots.size()));
      for (int j = 0, v = 0; j < kv_len; ++j) {
        if (j >= head_len && j < gap_ends[s]) continue;
        if (!selected[v++]) continue;
        const int page = kv_indices[kv_indptr[s] + j / tpp];
        for (int kv = 0; kv < 2; ++kv) {
          float* row = arena.data() + slot_elem(cpu_layout, layer, page, kv, h, j % tpp);
          for (int d = 0; d < dim; ++d) row[d] = round_bf16(normal(rng));
        }
        if (bias_seqs[s]) {
          bias[((static_cast<size_t>(layer) * cpu_layout.num_pages + page) * c.num_kv_heads + h) *
                   tpp +
               j % tpp] = j < history && hook_rng() % 16 == 0 ? -INFINITY : uniform(hook_rng);
        }
      }
    }
  }
  const int num_tokens = qo_indptr.back();
  // q lives in a fused QKV-like buffer: a strided [T, H, D] view, as the model passes it.
  const int64_t q_dim = static_cast<int64_t>(c.num_heads) * dim;
  const int64_t width = q_dim + 2ll * c.num_kv_heads * dim;
  const Tensor fused = random_bf16_values({num_tokens, width}, rng);
  const TensorView host_q = fused.view().slice(1, 0, q_dim).unflatten(1, c.num_heads, dim);

  AttentionArgs ref;
  ref.q = host_q;
  Tensor want = Tensor::empty(DType::kF32, {num_tokens, c.num_heads, dim});
  ref.out = want;
  ref.arena = TensorView(arena.data(), DType::kF32, {static_cast<int64_t>(arena_elems)});
  ref.layout = cpu_layout;
  ref.layer = layer;
  auto host_i32 = [](std::vector<int32_t>& v) {
    return TensorView(v.data(), DType::kI32, {static_cast<int64_t>(v.size())});
  };
  ref.qo_indptr = host_i32(qo_indptr);
  ref.kv_indptr = host_i32(kv_indptr);
  ref.kv_indices = host_i32(kv_indices);
  ref.kv_lens = host_i32(kv_lens);
  if (c.per_head_lens) {
    ref.kv_head_lens = host_i32(head_lens);
    ref.kv_gap_ends = host_i32(gap_ends);
  }
  if (c.bias) {
    ref.slot_bias = TensorView(bias.data(), DType::kF32, {static_cast<int64_t>(bias.size())});
    ref.slot_bias_seqs = host_i32(bias_seqs);
  }
  if (c.select) {
    ref.selected_indptr = host_i32(selected_indptr);
    ref.selected_slots = host_i32(selected_slots);
  }
  ref.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  kernels::cpu::attention(ref);

  // The GPU arena: the same elements in the GPU's KV dtype.
  KvCacheLayout gpu_layout = cpu_layout;
  gpu_layout.dtype = c.kv_dtype;
  Tensor host_arena = Tensor::empty(DType::kF32, {static_cast<int64_t>(arena_elems)});
  std::copy(arena.begin(), arena.end(), host_arena.data<float>());
  const Tensor d_arena_typed = upload(gpu, host_arena, c.kv_dtype);
  const TensorView d_arena(d_arena_typed.view().raw(), DType::kU8,
                           {static_cast<int64_t>(gpu_layout.arena_bytes())}, Device::kCuda);
  const Tensor d_fused = upload(gpu, fused, DType::kBF16);
  // out is strided too: the middle of a wider buffer.
  const Tensor d_out_buffer = poisoned(gpu, DType::kBF16, {num_tokens, q_dim + 2 * dim});
  const TensorView d_out =
      d_out_buffer.view().slice(1, dim, dim + q_dim).unflatten(1, c.num_heads, dim);
  const Tensor d_qo = upload_i32(gpu, qo_indptr), d_kv_indptr = upload_i32(gpu, kv_indptr),
               d_kv_indices = upload_i32(gpu, kv_indices), d_kv_lens = upload_i32(gpu, kv_lens),
               d_head_lens = upload_i32(gpu, head_lens), d_gap_ends = upload_i32(gpu, gap_ends);
  AttentionArgs args = ref;
  args.q = d_fused.view().slice(1, 0, q_dim).unflatten(1, c.num_heads, dim);
  args.out = d_out;
  args.arena = d_arena;
  args.layout = gpu_layout;
  args.qo_indptr = d_qo;
  args.kv_indptr = d_kv_indptr;
  args.kv_indices = d_kv_indices;
  args.kv_lens = d_kv_lens;
  args.kv_head_lens = c.per_head_lens ? d_head_lens.view() : TensorView();
  args.kv_gap_ends = c.per_head_lens ? d_gap_ends.view() : TensorView();
  Tensor d_bias, d_bias_seqs, d_selected_slots;
  if (c.bias) {
    Tensor host_bias = Tensor::empty(DType::kF32, {static_cast<int64_t>(bias.size())});
    std::copy(bias.begin(), bias.end(), host_bias.data<float>());
    d_bias = upload(gpu, host_bias, DType::kF32);
    d_bias_seqs = upload_i32(gpu, bias_seqs);
    args.slot_bias = d_bias;
    args.slot_bias_seqs = d_bias_seqs;
  }
  if (c.select) {  // the indptr from the host (staged by the backend), the slots on the device
    d_selected_slots = upload_i32(gpu, selected_slots);
    args.selected_indptr = host_i32(selected_indptr);
    args.selected_slots = d_selected_slots;
  }
  if (c.q_len_bounds) {
    args.min_q_len = INT32_MAX;
    for (const Seq& s : c.seqs) {
      args.min_q_len = std::min(args.min_q_len, s.q_len);
      args.max_q_len = std::max(args.max_q_len, s.q_len);
    }
  }
  gpu.attention(args);

  const Tensor got_buffer = download(gpu, d_out_buffer);
  Tensor got = Tensor::empty(DType::kF32, {num_tokens, c.num_heads, dim});
  for (int t = 0; t < num_tokens; ++t) {
    std::copy_n(got_buffer.data<float>() + t * (q_dim + 2 * dim) + dim, q_dim,
                got.data<float>() + t * q_dim);
  }
  EXPECT_LT(relative_error(got, want), kBf16Tolerance);
  // The untouched margins of the output buffer are still NaN: nothing was written outside.
  EXPECT_TRUE(std::isnan(got_buffer.data<float>()[0]));
  EXPECT_TRUE(std::isnan(got_buffer.data<float>()[q_dim + dim]));
}

std::vector<Seq> random_seqs(std::mt19937& rng, int n, int max_history, int max_q) {
  std::vector<Seq> seqs;
  for (int i = 0; i < n; ++i) {
    const int q = 1 + static_cast<int>(rng() % max_q);
    seqs.push_back({q + static_cast<int>(rng() % (max_history + 1)), q});
  }
  return seqs;
}

class CudaAttention : public ::testing::TestWithParam<uint32_t> {};

TEST_P(CudaAttention, DecodeBatchGqaAndMha) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam());
  run_case({random_seqs(rng, 8, 600, 1), 32, 8, 128, 16}, GetParam());
  run_case({random_seqs(rng, 5, 300, 1), 16, 16, 64, 16}, GetParam());
}

TEST_P(CudaAttention, DecodeAndPrefillChunksOverHistoryInOneBatch) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam() + 100);
  std::vector<Seq> seqs = random_seqs(rng, 4, 400, 1);           // decode rows
  for (const Seq& s : random_seqs(rng, 3, 500, 90)) seqs.push_back(s);  // chunks over history
  seqs.push_back({130, 130});                                     // a fresh prompt
  run_case({seqs, 32, 8, 128, 16}, GetParam());
  run_case({seqs, 8, 8, 64, 32}, GetParam());
}

TEST_P(CudaAttention, LongContextsSplitAlongTheContext) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam() + 200);
  const int long_len = 4096 + static_cast<int>(rng() % 4096);
  run_case({{{long_len, 1}, {5000, 1}, {long_len / 3, 1}}, 32, 8, 128, 16}, GetParam());
  run_case({{{long_len, 1}}, 8, 8, 64, 16}, GetParam());
  // Prefill chunks of a few rows over a long history: several chunks per sequence, each split.
  run_case({{{3000 + 40, 40}, {long_len, 1}}, 8, 2, 128, 16}, GetParam());
}

// Long prompts take the tensor-core kernel (many 64-row tiles, 64-slot K/V tiles, causal edges
// inside a tile), decode rows the FMA kernel, in one batch; with and without the host's q_len
// bounds, which skip the kernel class no sequence needs.
TEST_P(CudaAttention, LongPromptsOnTensorCoresBesideDecodeRows) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam() + 500);
  std::vector<Seq> seqs = {{1000 + 300, 1000}, {333, 333}, {77 + 16, 16}};
  for (const Seq& s : random_seqs(rng, 5, 900, 1)) seqs.push_back(s);
  for (const bool bounds : {false, true}) {
    run_case({seqs, 32, 8, 128, 16, false, DType::kBF16, bounds}, GetParam());
    run_case({seqs, 8, 8, 64, 16, false, DType::kBF16, bounds}, GetParam());
  }
  // Prompts only (bounds skip the FMA kernel), odd lengths, 32-slot pages.
  run_case({{{257, 257}, {1500 + 3, 1500}}, 16, 4, 128, 32, false, DType::kBF16, true},
           GetParam());
}

TEST_P(CudaAttention, CompactedSequencesSkipTheirDeadGaps) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam() + 300);
  Case decode{random_seqs(rng, 6, 700, 1), 32, 8, 128, 16, true};
  run_case(decode, GetParam());
  Case mixed{random_seqs(rng, 4, 300, 50), 16, 4, 64, 16, true};
  mixed.seqs.push_back({6000, 1});
  run_case(mixed, GetParam());
}

TEST_P(CudaAttention, GenericHeadDimsOddPagesAndF32Cache) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam() + 400);
  const std::vector<Seq> seqs = random_seqs(rng, 5, 200, 40);
  run_case({seqs, 9, 3, 16, 7}, GetParam());                    // SmolLM2-like, 7-slot pages
  run_case({seqs, 4, 2, 48, 16}, GetParam());                   // Qwen3 fixture's head_dim
  run_case({seqs, 4, 1, 16, 16, true}, GetParam());             // MQA, per-head lengths
  run_case({seqs, 32, 8, 128, 16, false, DType::kF32}, GetParam());  // f32 KV arena
  run_case({{{5000, 1}, {900, 17}}, 8, 2, 64, 16, false, DType::kF32}, GetParam());
}

// The hooks on decode rows (FMA kernel, with split-K over long contexts) and prefill chunks
// (tensor-core kernel, head_dim 64 and 128), each alone and both together.
TEST_P(CudaAttention, SlotBiasAndSelectionOnDecodeRowsAndPrefillChunks) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam() + 600);
  std::vector<Seq> mixed = random_seqs(rng, 5, 700, 1);                  // decode rows
  for (const Seq& s : random_seqs(rng, 2, 300, 40)) mixed.push_back(s);  // small chunks
  mixed.push_back({600 + 200, 200});                                     // tensor-core chunks
  mixed.push_back({150, 150});
  const std::vector<Seq> long_decode = {{6000, 1}, {2500, 1}};
  const std::pair<bool, bool> hooks[] = {{true, false}, {false, true}, {true, true}};
  for (const auto& [bias, select] : hooks) {
    Case decode{random_seqs(rng, 8, 900, 1), 32, 8, 128, 16};
    decode.bias = bias;
    decode.select = select;
    run_case(decode, GetParam());
    Case split{long_decode, 8, 2, 64, 16};
    split.bias = bias;
    split.select = select;
    run_case(split, GetParam());
    for (const int dim : {128, 64}) {
      Case prefill{mixed, dim == 128 ? 32 : 8, 8, dim, 16};
      prefill.bias = bias;
      prefill.select = select;
      run_case(prefill, GetParam());
    }
  }
}

// Both hooks on compacted sequences (virtual slots around the dead gap), with the host's q_len
// bounds, on prompts only (tensor cores), on a generic head_dim (the FMA kernel takes prefill
// rows too) and with 7-slot pages.
TEST_P(CudaAttention, BothHooksOnCompactedSequencesAndGenericHeadDims) {
  SIEVE_GPU_OR_SKIP();
  std::mt19937 rng(GetParam() + 700);
  std::vector<Seq> seqs = random_seqs(rng, 4, 500, 1);
  for (const Seq& s : random_seqs(rng, 2, 400, 120)) seqs.push_back(s);
  seqs.push_back({5000, 1});
  Case compacted{seqs, 16, 4, 128, 16, true, DType::kBF16, true, true, true};
  run_case(compacted, GetParam());
  compacted.num_heads = 8;
  compacted.num_kv_heads = 8;
  compacted.head_dim = 64;
  run_case(compacted, GetParam());
  run_case({{{257, 257}, {1500 + 3, 1500}}, 16, 4, 128, 32, false, DType::kBF16, true, true, true},
           GetParam());
  const std::vector<Seq> small = random_seqs(rng, 5, 200, 40);
  run_case({small, 4, 2, 48, 16, true, DType::kBF16, false, true, true}, GetParam());
  run_case({small, 9, 3, 64, 7, true, DType::kBF16, false, true, true}, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Seeds, CudaAttention, ::testing::Values(1u, 2u, 3u));

// write_kv, copy_pages and compact_kv: exact against the CPU ops (bf16 values round-trip).
TEST(CudaKvCache, WriteCopyAndCompactMatchTheCpu) {
  SIEVE_GPU_OR_SKIP();
  for (const DType kv_dtype : {DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message() << "KV " << kv_dtype);
    std::mt19937 rng(kv_dtype == DType::kBF16 ? 5 : 6);
    const int num_layers = 2, heads = 4, dim = 64, tpp = 16, pages = 12, tokens = 40;
    KvCacheLayout layout{num_layers, heads, dim, tpp, pages, DType::kF32, std::nullopt, 0};
    const int64_t elems = static_cast<int64_t>(layout.arena_bytes() / 4);
    Tensor arena = Tensor::empty(DType::kF32, {elems});
    std::fill_n(arena.data<float>(), elems, NAN);
    KvCacheLayout gpu_layout = layout;
    gpu_layout.dtype = kv_dtype;
    const Tensor d_typed = upload(*gpu_backend, arena, kv_dtype);
    const TensorView d_arena(d_typed.view().raw(), DType::kU8,
                             {static_cast<int64_t>(gpu_layout.arena_bytes())}, Device::kCuda);
    // Tokens go to shuffled slots of pages 0..5; some are skipped (slot -1).
    std::vector<int32_t> slots(tokens);
    std::vector<int32_t> all(6 * tpp);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    for (int t = 0; t < tokens; ++t) slots[t] = t % 7 == 3 ? -1 : all[t];
    const Tensor kv_rows = random_bf16_values({tokens, 3 * heads * dim}, rng);  // strided k/v
    for (const int l : {0, 1}) {
      const TensorView k = kv_rows.view().slice(1, 0, heads * dim).unflatten(1, heads, dim);
      const TensorView v =
          kv_rows.view().slice(1, 2 * heads * dim, 3 * heads * dim).unflatten(1, heads, dim);
      kernels::cpu::write_kv(
          {k, v, TensorView(slots.data(), DType::kI32, {tokens}), arena, layout, l, {}, {}});
      const Tensor d_rows = upload(*gpu_backend, kv_rows, DType::kBF16);
      const TensorView dk = d_rows.view().slice(1, 0, heads * dim).unflatten(1, heads, dim);
      const TensorView dv =
          d_rows.view().slice(1, 2 * heads * dim, 3 * heads * dim).unflatten(1, heads, dim);
      gpu_backend->write_kv(
          {dk, dv, upload_i32(*gpu_backend, slots), d_arena, gpu_layout, l, {}, {}});
    }
    auto same_arena = [&](const char* step) {
      const Tensor got = download(*gpu_backend, d_typed);
      int64_t mismatches = 0;
      for (int64_t i = 0; i < elems; ++i) {
        const float a = got.data<float>()[i], b = arena.data<float>()[i];
        if (!(a == b || (std::isnan(a) && std::isnan(b)))) ++mismatches;
      }
      EXPECT_EQ(mismatches, 0) << step;
    };
    same_arena("write_kv");

    std::vector<int32_t> src{0, 3, 5}, dst{7, 9, 11};
    kernels::cpu::copy_pages({arena, layout, TensorView(src.data(), DType::kI32, {3}),
                              TensorView(dst.data(), DType::kI32, {3})});
    gpu_backend->copy_pages({d_arena, gpu_layout, upload_i32(*gpu_backend, src),
                             upload_i32(*gpu_backend, dst)});
    same_arena("copy_pages");

    // Compaction of a sequence over pages {2, 0, 4, 1}: ascending keep lists per (layer, head).
    std::vector<int32_t> table{2, 0, 4, 1};
    const int max_keep = 30;
    std::vector<int32_t> keep(num_layers * heads * max_keep, 0), counts(num_layers * heads);
    for (int list = 0; list < num_layers * heads; ++list) {
      std::vector<int32_t> candidates(4 * tpp);
      std::iota(candidates.begin(), candidates.end(), 0);
      std::shuffle(candidates.begin(), candidates.end(), rng);
      counts[list] = 1 + static_cast<int>(rng() % max_keep);
      std::sort(candidates.begin(), candidates.begin() + counts[list]);
      std::copy_n(candidates.begin(), counts[list], keep.begin() + list * max_keep);
    }
    kernels::cpu::compact_kv({arena, layout, TensorView(table.data(), DType::kI32, {4}),
                              TensorView(keep.data(), DType::kI32, {num_layers, heads, max_keep}),
                              TensorView(counts.data(), DType::kI32, {num_layers, heads})});
    const Tensor d_keep = upload_i32(*gpu_backend, keep);
    gpu_backend->compact_kv({d_arena, gpu_layout, upload_i32(*gpu_backend, table),
                             d_keep.view().reshape({num_layers, heads, max_keep}),
                             upload_i32(*gpu_backend, counts).view().reshape({num_layers, heads})});
    same_arena("compact_kv");
  }
}

}  // namespace
}  // namespace sieve::cuda_test
