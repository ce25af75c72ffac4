// The compression ops on the GPU against the CPU backend: copy_rows (rows gathered from a column
// slice of a wider bf16 buffer, as the model captures queries out of its fused QKV buffer, at
// 4-, 2- and 1-element alignments) and kv_signals over random paged caches (shuffled pages, head
// dims 64 and 128 and a generic 48, GQA groups 1, 3, 4 and 16, odd page sizes, a compacted
// sequence with per-(layer, KV head) survivors, a dead gap and the slots appended since, windows
// of 1, 16 and 64 queries, every output and subsets of them, bf16 and f32 arenas, slots left out
// of the softmax and a running max raised from earlier windows' values), and every policy's
// decision from either backend's signals on one cache. The same bf16-rounded
// keys, values and queries go to a CPU f32 arena and to the GPU; every slot the op must not read
// (dead gaps, unused page slots) is NaN in both, and the outputs start NaN, so a read past a
// length or a missing write fails, and entries past a head's valid slots must stay NaN ("left as
// they are").

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kvcache/policies/protection.h"
#include "kvcache/policies/spec.h"
#include "nlohmann/json.hpp"
#include "tests/cuda/test_util.h"

namespace sieve::cuda_test {
namespace {

using kernels::CopyRowsArgs;
using kernels::KvCacheLayout;
using kernels::KvSignalArgs;

// Inputs are the same values on both sides and the arithmetic is f32: far under bf16's band.
constexpr double kSignalTolerance = 1e-3;

TEST(CudaSignals, CopyRowsGathersFromAColumnSliceOfAWiderBuffer) {
  SIEVE_GPU_OR_SKIP();
  struct Case {
    int64_t src_rows, src_width, column, width, dst_rows;
  };
  // A fused-QKV-like source [T, q + 2 kv] with the q columns copied into a store of more rows;
  // then slices at odd offsets and widths (2-byte and unaligned 4-byte rows).
  for (const Case c : {Case{37, 1024 + 2 * 256, 0, 1024, 64}, Case{9, 96 + 64, 0, 96, 20},
                       Case{21, 300, 2, 200, 30}, Case{15, 131, 1, 97, 40}, Case{5, 64, 3, 5, 8}}) {
    SCOPED_TRACE(::testing::Message() << c.src_rows << "x" << c.src_width << " columns ["
                                      << c.column << ", " << c.column + c.width << ")");
    std::mt19937 rng(static_cast<uint32_t>(c.src_width * 7 + c.column));
    const Tensor src = random_bf16_values({c.src_rows, c.src_width}, rng);
    // Distinct destination rows, any source rows (repeats allowed).
    std::vector<int32_t> dst_rows(c.dst_rows);
    std::iota(dst_rows.begin(), dst_rows.end(), 0);
    std::shuffle(dst_rows.begin(), dst_rows.end(), rng);
    dst_rows.resize(std::min<int64_t>(c.src_rows + 3, c.dst_rows));
    std::vector<int32_t> src_rows(dst_rows.size());
    for (int32_t& r : src_rows) r = static_cast<int32_t>(rng() % c.src_rows);

    const Tensor d_src = upload(*gpu_backend, src, DType::kBF16);
    const Tensor d_dst = poisoned(*gpu_backend, DType::kBF16, {c.dst_rows, c.width});
    const auto n = static_cast<int64_t>(dst_rows.size());
    // The row lists once from the host (staged) and once on the device.
    for (const bool device_lists : {false, true}) {
      const Tensor d_dst_rows = upload_i32(*gpu_backend, dst_rows);
      const Tensor d_src_rows = upload_i32(*gpu_backend, src_rows);
      const TensorView host_dst_rows(dst_rows.data(), DType::kI32, {n});
      const TensorView host_src_rows(src_rows.data(), DType::kI32, {n});
      gpu_backend->copy_rows(CopyRowsArgs{d_dst, device_lists ? d_dst_rows.view() : host_dst_rows,
                                          d_src.view().slice(1, c.column, c.column + c.width),
                                          device_lists ? d_src_rows.view() : host_src_rows});
    }
    Tensor want = Tensor::empty(DType::kF32, {c.dst_rows, c.width});
    std::fill_n(want.data<float>(), want.numel(), NAN);
    kernels::cpu::copy_rows(CopyRowsArgs{want, TensorView(dst_rows.data(), DType::kI32, {n}),
                                         src.view().slice(1, c.column, c.column + c.width),
                                         TensorView(src_rows.data(), DType::kI32, {n})});
    const Tensor got = download(*gpu_backend, d_dst);
    // Bit-exact where written; still NaN where no row was copied.
    for (int64_t i = 0; i < got.numel(); ++i) {
      const float g = got.data<float>()[i], w = want.data<float>()[i];
      if (std::isnan(w)) {
        ASSERT_TRUE(std::isnan(g)) << "element " << i << " written";
      } else {
        ASSERT_EQ(g, w) << "element " << i;
      }
    }
  }
}

struct SignalCase {
  int num_heads, num_kv_heads, head_dim, tokens_per_page;
  int num_tokens;           // physical slots in use
  int num_queries;          // 0: no window signals
  bool compacted = false;   // per-head survivors, a dead gap, then appended slots
  bool all_outputs = true;  // else the window sums, key norms and anchor dot only
  DType kv_dtype = DType::kBF16;
  DType query_dtype = DType::kBF16;
  bool skip = false;  // two ranges left out of the window's softmax (KVzip's reconstruction)
};

std::ostream& operator<<(std::ostream& os, const SignalCase& c) {
  return os << "heads " << c.num_heads << "/" << c.num_kv_heads << ", dim " << c.head_dim
            << ", tpp " << c.tokens_per_page << ", tokens " << c.num_tokens << ", queries "
            << c.num_queries << ", compacted " << c.compacted << ", all outputs " << c.all_outputs
            << ", KV " << c.kv_dtype << ", q " << c.query_dtype << ", skip " << c.skip;
}

struct Output {
  const char* name;
  bool per_query_head;
  TensorView KvSignalArgs::*member;
};
const Output kOutputs[] = {
    {"window_attention", true, &KvSignalArgs::window_attention},
    {"window_attention_group_max", false, &KvSignalArgs::window_attention_group_max},
    {"key_norms", false, &KvSignalArgs::key_norms},
    {"value_norms", false, &KvSignalArgs::value_norms},
    {"key_anchor_dot", false, &KvSignalArgs::key_anchor_dot},
    {"window_attention_max", false, &KvSignalArgs::window_attention_max},
};
constexpr int kNumOutputs = 6;
constexpr int kRunningMax = 5;  // raised from the values already there, not written

// One case's signals from both backends, as host f32 [L, heads, slot_stride] tensors in
// kOutputs order (NaN where nothing was written).
struct SignalResult {
  int num_layers = 0, slot_stride = 0;
  std::vector<int32_t> valid;  // valid slots per (layer, KV head)
  bool wanted[kNumOutputs] = {};
  std::vector<Tensor> want, got;
};

SignalResult compute_signals(const SignalCase& c, uint32_t seed) {
  kernels::Backend& gpu = *::sieve::cuda_test::gpu();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int num_layers = 3, hkv = c.num_kv_heads, dim = c.head_dim, tpp = c.tokens_per_page;
  const int num_seq_pages = (c.num_tokens + tpp - 1) / tpp;
  const KvCacheLayout cpu_layout{num_layers,        hkv,         dim,          tpp,
                                 num_seq_pages + 4, DType::kF32, std::nullopt, 0};
  const size_t arena_elems = cpu_layout.arena_bytes() / sizeof(float);
  std::vector<float> arena(arena_elems, NAN);
  std::vector<int32_t> pool(cpu_layout.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> pages(pool.begin(), pool.begin() + num_seq_pages);

  // A compacted sequence: head (l, h) keeps [0, head_len) packed, [head_len, gap_end) is dead,
  // [gap_end, num_tokens) were appended since (the window's queries among them).
  int gap_end = c.num_tokens;
  std::vector<int32_t> head_lens(num_layers * hkv, c.num_tokens);
  if (c.compacted) {
    const int appended = std::max(c.num_queries, 1) + static_cast<int>(rng() % 40);
    gap_end = c.num_tokens - appended;
    for (int32_t& len : head_lens) len = static_cast<int32_t>(rng() % (gap_end + 1));
    head_lens[0] = gap_end;  // one head kept everything, one nothing
    head_lens[1] = 0;
  }
  int slot_stride = 0;
  std::vector<int32_t> valid(num_layers * hkv);
  for (int r = 0; r < num_layers * hkv; ++r) {
    valid[r] = c.compacted ? head_lens[r] + c.num_tokens - gap_end : c.num_tokens;
    slot_stride = std::max(slot_stride, valid[r]);
  }
  slot_stride += 3;  // entries past every head's valid slots, which must stay untouched
  auto elem = [&](int layer, int page, int kv, int head, int offset) {
    return ((static_cast<size_t>(layer) * cpu_layout.num_pages + page) * 2 * hkv * tpp +
            (static_cast<size_t>(kv) * hkv + head) * tpp + offset) *
           dim;
  };
  for (int l = 0; l < num_layers; ++l) {
    for (int h = 0; h < hkv; ++h) {
      for (int j = 0; j < c.num_tokens; ++j) {
        if (c.compacted && j >= head_lens[l * hkv + h] && j < gap_end) continue;  // dead
        const int page = pages[j / tpp];
        // Keys of varied norms (KnormPress-like scores differ); a mean direction for the anchor.
        const float key_scale = 0.5f + static_cast<float>(rng() % 8) / 4.0f;
        for (int kv = 0; kv < 2; ++kv) {
          float* row = arena.data() + elem(l, page, kv, h, j % tpp);
          for (int d = 0; d < dim; ++d) {
            row[d] = round_bf16(kv == 0 ? key_scale * normal(rng) + (d % 3 == 0 ? 0.7f : 0.0f)
                                        : normal(rng));
          }
        }
      }
    }
  }
  // The queries as the engine keeps them: rows of a wider store [L, rows, H * D].
  const int store_rows = c.num_queries + 5, first_row = 2;
  const Tensor store = random_bf16_values({num_layers, store_rows, c.num_heads * dim}, rng, 1.5f);

  KvSignalArgs ref;
  ref.arena = TensorView(arena.data(), DType::kF32, {static_cast<int64_t>(arena_elems)});
  ref.layout = cpu_layout;
  ref.page_table = TensorView(pages.data(), DType::kI32, {num_seq_pages});
  ref.num_tokens = c.num_tokens;
  if (c.compacted) {
    ref.head_lens = TensorView(head_lens.data(), DType::kI32, {num_layers * hkv});
    ref.gap_end = gap_end;
  }
  if (c.num_queries > 0) {
    ref.queries =
        store.view().slice(1, first_row, first_row + c.num_queries).unflatten(2, c.num_heads, dim);
    ref.num_queries = c.num_queries;
  }
  ref.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  ref.slot_stride = slot_stride;
  if (c.skip) {  // both before the window
    ref.skip_begin[0] = 2, ref.skip_end[0] = 7;
    ref.skip_begin[1] = c.num_tokens / 3, ref.skip_end[1] = c.num_tokens / 3 + 9;
  }
  const bool window = c.num_queries > 0;
  SignalResult result;
  result.num_layers = num_layers;
  result.slot_stride = slot_stride;
  result.valid = valid;
  const bool wanted[kNumOutputs] = {window, window && c.all_outputs, true, c.all_outputs,
                                    true,   window && c.all_outputs};
  std::vector<Tensor> got;
  for (int i = 0; i < kNumOutputs; ++i) {
    const int heads = kOutputs[i].per_query_head ? c.num_heads : hkv;
    result.wanted[i] = wanted[i];
    result.want.push_back(Tensor::empty(DType::kF32, {num_layers, heads, slot_stride}));
    float* w = result.want.back().data<float>();
    std::fill_n(w, result.want.back().numel(), NAN);
    if (i == kRunningMax && wanted[i]) {
      // Earlier windows' maxima on the valid slots, the same on both sides; some above what this
      // window gives.
      std::uniform_real_distribution<float> earlier(0.0f, 0.05f);
      for (int r = 0; r < num_layers * hkv; ++r) {
        for (int v = 0; v < valid[r]; ++v) w[r * slot_stride + v] = rng() % 3 ? 0.0f : earlier(rng);
      }
      got.push_back(upload(gpu, result.want.back(), DType::kF32));
    } else {
      got.push_back(poisoned(gpu, DType::kF32, {num_layers, heads, slot_stride}));
    }
    if (wanted[i]) ref.*kOutputs[i].member = result.want.back();
  }
  kernels::cpu::ref::kv_signals(ref);

  KvCacheLayout gpu_layout = cpu_layout;
  gpu_layout.dtype = c.kv_dtype;
  Tensor host_arena = Tensor::empty(DType::kF32, {static_cast<int64_t>(arena_elems)});
  std::copy(arena.begin(), arena.end(), host_arena.data<float>());
  const Tensor d_arena_typed = upload(gpu, host_arena, c.kv_dtype);
  const Tensor d_store = upload(gpu, store, c.query_dtype);
  KvSignalArgs args = ref;
  args.arena = TensorView(d_arena_typed.view().raw(), DType::kU8,
                          {static_cast<int64_t>(gpu_layout.arena_bytes())}, Device::kCuda);
  args.layout = gpu_layout;
  if (window) {
    args.queries = d_store.view()
                       .slice(1, first_row, first_row + c.num_queries)
                       .unflatten(2, c.num_heads, dim);
  }
  for (int i = 0; i < kNumOutputs; ++i) {
    args.*kOutputs[i].member = wanted[i] ? got[i].view() : TensorView();
  }
  gpu.kv_signals(args);  // page table and head lengths from the host: staged
  for (const Tensor& g : got) result.got.push_back(download(gpu, g));
  return result;
}

void run_signal_case(const SignalCase& c, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed << ", " << c);
  const SignalResult r = compute_signals(c, seed);
  const int hkv = c.num_kv_heads;
  for (int i = 0; i < kNumOutputs; ++i) {
    SCOPED_TRACE(kOutputs[i].name);
    const int heads = kOutputs[i].per_query_head ? c.num_heads : hkv;
    const Tensor& g = r.got[i];
    const Tensor& w = r.want[i];
    std::vector<float> g_valid, w_valid;
    double max_ref = 0, max_diff = 0;
    int64_t written_past_valid = 0, unwritten = 0;
    for (int l = 0; l < r.num_layers; ++l) {
      for (int h = 0; h < heads; ++h) {
        const int kv_head = heads == hkv ? h : h / (c.num_heads / hkv);
        const int n = r.valid[l * hkv + kv_head];
        const int64_t base = (static_cast<int64_t>(l) * heads + h) * r.slot_stride;
        for (int v = 0; v < r.slot_stride; ++v) {
          const float gv = g.data<float>()[base + v], wv = w.data<float>()[base + v];
          if (!r.wanted[i] || v >= n) {
            written_past_valid += !std::isnan(gv);
            continue;
          }
          unwritten += std::isnan(gv);
          g_valid.push_back(gv);
          w_valid.push_back(wv);
          max_ref = std::max(max_ref, std::fabs(double{wv}));
          max_diff = std::max(max_diff, std::fabs(double{gv} - wv));
        }
      }
    }
    EXPECT_EQ(written_past_valid, 0) << "entries written past the valid slots (or not asked for)";
    if (!r.wanted[i]) continue;
    EXPECT_EQ(unwritten, 0) << "valid entries left NaN";
    ASSERT_FALSE(w_valid.empty());
    EXPECT_LT(relative_error(g_valid.data(), w_valid.data(), static_cast<int64_t>(w_valid.size())),
              kSignalTolerance);
    EXPECT_LE(max_diff, kSignalTolerance * max_ref + 1e-6) << "max |ref| " << max_ref;
  }
}

class CudaSignals : public ::testing::TestWithParam<uint32_t> {};

TEST_P(CudaSignals, WindowAttentionAndNormsOfAWholeSequence) {
  SIEVE_GPU_OR_SKIP();
  const uint32_t seed = GetParam();
  run_signal_case({32, 8, 128, 16, 300, 16}, seed);      // GQA 4:1
  run_signal_case({8, 8, 64, 16, 97, 1}, seed + 1);      // MHA, one query
  run_signal_case({12, 4, 64, 7, 700, 64}, seed + 2);    // GQA 3:1, odd pages, 64 queries
  run_signal_case({6, 2, 48, 16, 64, 64}, seed + 3);     // a window as long as the sequence
  run_signal_case({16, 1, 128, 32, 260, 16}, seed + 4);  // MQA: a group of 16
  SignalCase skip{12, 4, 64, 7, 700, 64};                // two ranges left out of the softmax
  skip.skip = true;
  run_signal_case(skip, seed + 5);
  skip = {32, 8, 128, 16, 300, 16, false, true, DType::kF32, DType::kF32};
  skip.skip = true;
  run_signal_case(skip, seed + 6);
}

TEST_P(CudaSignals, CompactedSequenceReadsOnlyItsValidSlots) {
  SIEVE_GPU_OR_SKIP();
  const uint32_t seed = GetParam() + 100;
  run_signal_case({32, 8, 128, 16, 400, 16, true}, seed);
  run_signal_case({12, 4, 64, 5, 333, 64, true}, seed + 1);
  run_signal_case({8, 8, 128, 16, 90, 1, true}, seed + 2);
  run_signal_case({12, 4, 64, 16, 150, 0, true}, seed + 3);  // norms only, no window
}

TEST_P(CudaSignals, SubsetsOfOutputsAndOtherDtypes) {
  SIEVE_GPU_OR_SKIP();
  const uint32_t seed = GetParam() + 200;
  run_signal_case({32, 8, 128, 16, 200, 16, false, false}, seed);
  run_signal_case({12, 4, 64, 16, 180, 16, true, true, DType::kF32, DType::kF32}, seed + 1);
  run_signal_case({12, 4, 128, 16, 180, 16, false, true, DType::kBF16, DType::kF32}, seed + 2);
  run_signal_case({8, 8, 64, 16, 120, 16, true, true, DType::kF32, DType::kBF16}, seed + 3);
}

// The policies' decisions from the GPU's signals equal those from the CPU's on the same cache:
// what the engine keeps on the GPU differs from the CPU engine's only where the model's own bf16
// numbers (keys, values, queries) differ. A pair of scores within the signals' f32 rounding of
// each other may swap at the budget's edge: at most one slot a row, and rarely.
TEST_P(CudaSignals, PoliciesDecideAlikeOnBothBackendsSignals) {
  SIEVE_GPU_OR_SKIP();
  const uint32_t seed = GetParam() + 300;
  int rows_total = 0, rows_differing = 0;
  for (const char* method :
       {"snapkv", "pyramidkv", "adakv", "h2o", "tova", "knorm", "keydiff", "gkv", "kvzip"}) {
    SCOPED_TRACE(method);
    auto parsed = kvcache::parse_compression(nlohmann::json{{"method", method}, {"budget", 70}});
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    const kvcache::CompressionSpec& spec = *parsed;
    const kvcache::PolicyNeeds needs = spec.policy->needs(*spec.params);
    const int window = spec.protection.window;
    // kvzip scores with a window of reconstruction queries (its running max).
    const int queries = needs.any_window() ? window : needs.reconstruction_chunk > 0 ? 16 : 0;
    const SignalCase c{32, 8, 128, 16, 300, queries};
    const SignalResult r = compute_signals(c, seed);
    const int rows = r.num_layers * c.num_kv_heads, stride = r.slot_stride;
    std::vector<int32_t> positions(static_cast<size_t>(rows) * stride, 0);
    for (int row = 0; row < rows; ++row) {
      for (int v = 0; v < r.valid[row]; ++v) positions[static_cast<size_t>(row) * stride + v] = v;
    }
    const std::vector<uint8_t> protect =
        kvcache::protected_slots(spec.protection, 0, positions, r.valid, stride);
    auto decide = [&](const std::vector<Tensor>& signals) {
      std::vector<float> state(static_cast<size_t>(rows) * stride, 0.0f);
      kvcache::PolicyInput in;
      in.num_layers = r.num_layers;
      in.num_kv_heads = c.num_kv_heads;
      in.num_heads = c.num_heads;
      in.valid_lens = r.valid;
      in.slot_stride = stride;
      in.protected_slots = protect;
      in.positions = positions;
      in.budget = spec.budget_for(c.num_tokens);
      in.window = window;
      in.at_prefill_end = true;
      in.signals.num_queries = c.num_queries;
      auto span = [&](int i, bool wanted) {
        return wanted ? std::span<const float>(signals[i].data<float>(), signals[i].numel())
                      : std::span<const float>();
      };
      in.signals.window_attention = span(0, needs.window_attention);
      in.signals.window_attention_group_max = span(1, needs.window_attention_group_max);
      in.signals.key_norms = span(2, needs.key_norms);
      in.signals.value_norms = span(3, needs.value_norms);
      in.signals.key_anchor_dot = span(4, needs.key_anchor_dot);
      in.signals.reconstruction_max = span(kRunningMax, needs.reconstruction_chunk > 0);
      in.state = state;
      in.params = spec.params.get();
      kvcache::KeepSlots keep = spec.policy->decide(in);
      kvcache::check_decision(in, keep, spec.policy->name());
      return keep;
    };
    const kvcache::KeepSlots from_cpu = decide(r.want), from_gpu = decide(r.got);
    ASSERT_EQ(from_cpu.indptr.size(), from_gpu.indptr.size());
    for (int row = 0; row < rows; ++row) {
      const std::vector<int32_t> a(from_cpu.slots.begin() + from_cpu.indptr[row],
                                   from_cpu.slots.begin() + from_cpu.indptr[row + 1]);
      const std::vector<int32_t> b(from_gpu.slots.begin() + from_gpu.indptr[row],
                                   from_gpu.slots.begin() + from_gpu.indptr[row + 1]);
      std::vector<int32_t> only;
      std::set_symmetric_difference(a.begin(), a.end(), b.begin(), b.end(),
                                    std::back_inserter(only));
      ++rows_total;
      rows_differing += !only.empty();
      EXPECT_LE(only.size(), 2u) << "row " << row << ": " << a.size() << " vs " << b.size()
                                 << " kept";
    }
  }
  std::printf("[ decide   ] rows whose kept slots differ (GPU vs CPU signals): %d of %d\n",
              rows_differing, rows_total);
  EXPECT_LE(rows_differing * 50, rows_total);  // at most 2%
}

INSTANTIATE_TEST_SUITE_P(Seeds, CudaSignals, ::testing::Values(1u, 2u));

}  // namespace
}  // namespace sieve::cuda_test
