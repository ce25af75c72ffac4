// The quantized KV formats (fp8_e4m3, int8, int4; kvcache/README.md "Formats") on the GPU against
// the CPU backend, over one arena of fixed-byte pages shared by sequences of different formats:
// - write_kv and the fused rope_write_kv store the CPU's exact bytes (elements and scales), for a
//   batch of one format and for a batch mixing it with bf16 (kv_formats + qo_indptr);
// - attention over bytes the CPU wrote matches CPU attention over the same bytes: decode rows
//   (FMA kernel), prefill chunks (tensor-core kernel, quantized tiles dequantized to bf16), long
//   contexts (split-K), compacted heads, one format alone and a mixed batch;
// - compact_kv and copy_pages move scales with their elements (bytes equal the CPU's);
// - kv_signals and expected_logits read quantized keys and values as the CPU does;
// - whole golden models teacher-forced with an int8 cache on the GPU track the CPU's int8 runs as
//   closely as the GPU's bf16 runs track the CPU's f32 ones.
// Unwritten bytes are 0xff in both arenas: a NaN half scale, a NaN bf16 or fp8 element, so a
// read of a slot no sequence wrote turns the output NaN.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"
#include "tests/cuda/test_util.h"
#include "tests/support/golden_model.h"
#include "tests/support/paged_sequence.h"

namespace sieve::cuda_test {
namespace {

using kernels::AttentionArgs;
using kernels::KvCacheLayout;
using kernels::KvWriteArgs;
using kvcache::KvFormatId;

constexpr KvFormatId kQuantized[] = {KvFormatId::kFp8E4M3, KvFormatId::kInt8, KvFormatId::kInt4};

const char* name_of(KvFormatId f) { return kvcache::kv_format(f).name.data(); }

// The engine's CUDA arena: pages of `bf16_tpp` bf16 tokens a layer; other formats fit more.
KvCacheLayout bf16_arena(int layers, int kv_heads, int dim, int bf16_tpp, int pages) {
  KvCacheLayout l;
  l.num_layers = layers;
  l.num_kv_heads = kv_heads;
  l.head_dim = dim;
  l.num_pages = pages;
  l.page_bytes = 2ull * kv_heads * bf16_tpp * dim * 2;
  return l.for_format(KvFormatId::kBF16);
}

Tensor device_bytes(kernels::Backend& gpu, const std::vector<uint8_t>& host) {
  auto d = gpu.allocate(DType::kU8, {static_cast<int64_t>(host.size())});
  SIEVE_CHECK(d.ok()) << d.status();
  gpu.copy(*d, TensorView(const_cast<uint8_t*>(host.data()), DType::kU8,
                          {static_cast<int64_t>(host.size())}));
  return *d;
}

std::vector<uint8_t> host_bytes(kernels::Backend& gpu, const Tensor& d) {
  std::vector<uint8_t> out(static_cast<size_t>(d.nbytes()));
  gpu.copy(TensorView(out.data(), DType::kU8, {static_cast<int64_t>(out.size())}), d);
  return out;
}

// Where byte `i` of the arena lies, in the words of `l` (a layout of the format that owns it).
std::string where(const KvCacheLayout& l, size_t i) {
  const size_t page_bytes = l.layer_page_bytes();
  const size_t layer_page = i / page_bytes, in_page = i % page_bytes;
  const kvcache::KvFormat& f = kvcache::kv_format(l.kv_format());
  const size_t rows = 2ull * l.num_kv_heads * l.tokens_per_page;
  const size_t data_plane = rows * f.data_bytes(l.head_dim);
  std::ostringstream s;
  s << "layer " << layer_page / l.num_pages << " page " << layer_page % l.num_pages << ": ";
  if (in_page < data_plane) {
    s << "element byte " << in_page % f.data_bytes(l.head_dim);
  } else if (f.meta_bytes(l.head_dim) > 0 &&
             in_page < data_plane + rows * f.meta_bytes(l.head_dim)) {
    s << "scale byte " << (in_page - data_plane) % f.meta_bytes(l.head_dim);
  } else {
    return s.str() + "past the planes";
  }
  const size_t row = in_page < data_plane ? in_page / f.data_bytes(l.head_dim)
                                          : (in_page - data_plane) / f.meta_bytes(l.head_dim);
  s << " of " << (row / (l.num_kv_heads * l.tokens_per_page) == 0 ? "K" : "V") << " head "
    << row / l.tokens_per_page % l.num_kv_heads << " slot " << row % l.tokens_per_page << " ("
    << f.name << " layout)";
  return s.str();
}

// Every differing byte counted, the first few described; empty when the arenas are equal.
std::string byte_diff(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                      const KvCacheLayout& l) {
  if (got.size() != want.size()) return "sizes differ";
  int64_t count = 0;
  std::ostringstream s;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == want[i]) continue;
    if (++count <= 8) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "byte %zu: got 0x%02x, want 0x%02x (", i, got[i], want[i]);
      s << buf << where(l, i) << ")\n";
    }
  }
  if (count == 0) return "";
  return std::to_string(count) + " bytes differ, first:\n" + s.str();
}

// K/V rows with the cases the codecs must agree on: a zero vector (scale 0), an outlier with tiny
// neighbours (fp8 subnormals, int8 zeros), large values, exact ties of int8 rounding.
Tensor kv_values(int tokens, int width, int heads, int dim, std::mt19937& rng) {
  Tensor t = random_bf16_values({tokens, width}, rng);
  float* x = t.data<float>();
  auto row = [&](int token, int head, int kv) {
    return x + static_cast<size_t>(token) * width + (kv == 0 ? 0 : heads * dim) + head * dim;
  };
  if (tokens > 3) {
    std::fill_n(row(0, 0, 0), dim, 0.0f);
    float* r = row(1, heads - 1, 1);
    for (int d = 0; d < dim; ++d) r[d] = round_bf16(1e-3f * r[d]);
    r[3] = 300.0f;
    r = row(2, 0, 1);
    for (int d = 0; d < dim; ++d) r[d] = round_bf16(2000.0f * r[d]);
    r = row(3, 0, 0);  // amax 127: the scale is 1 and x.5 values tie
    for (int d = 0; d < dim; ++d) r[d] = static_cast<float>(d % 16) - 7.5f;
    r[0] = 127.0f;
  }
  return t;
}

struct WriteBatch {
  std::vector<int32_t> qo_indptr{0}, formats, slots;
};

// Sequences of `formats` with `q_lens` tokens each, on shuffled pages of their own, slots in
// their format's tokens per page; some tokens skipped (slot -1).
WriteBatch write_batch(const KvCacheLayout& base, const std::vector<KvFormatId>& formats,
                       const std::vector<int>& q_lens, std::mt19937& rng) {
  WriteBatch b;
  std::vector<int32_t> pool(base.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  size_t next = 0;
  for (size_t s = 0; s < formats.size(); ++s) {
    const int tpp = base.for_format(formats[s]).tokens_per_page;
    const int pages = (q_lens[s] + tpp - 1) / tpp + 1;
    std::vector<int32_t> slots;
    for (int p = 0; p < pages; ++p) {
      for (int o = 0; o < tpp; ++o) slots.push_back(pool[next] * tpp + o);
      ++next;
    }
    std::shuffle(slots.begin(), slots.end(), rng);
    for (int t = 0; t < q_lens[s]; ++t) b.slots.push_back(t % 5 == 4 ? -1 : slots[t]);
    b.qo_indptr.push_back(b.qo_indptr.back() + q_lens[s]);
    b.formats.push_back(static_cast<int32_t>(formats[s]));
  }
  return b;
}

TensorView host_i32(std::vector<int32_t>& v) {
  return TensorView(v.data(), DType::kI32, {static_cast<int64_t>(v.size())});
}

// write_kv (and rope_write_kv at position 0, where RoPE is the identity) on the GPU gives the CPU
// write's bytes, exactly: both quantize the same bf16 values with the same f32 operations.
void check_write(KvFormatId format, int dim, bool mixed, bool fused) {
  SCOPED_TRACE(::testing::Message()
               << name_of(format) << " head_dim " << dim << (mixed ? " mixed" : "")
               << (fused ? " rope_write_kv" : " write_kv"));
  kernels::Backend& gpu = *::sieve::cuda_test::gpu();
  std::mt19937 rng(static_cast<uint32_t>(dim * 10 + static_cast<int>(format) + 100 * mixed));
  const int layers = 2, heads = 4, layer = 1;
  const KvCacheLayout base = bf16_arena(layers, heads, dim, 16, 24);
  const KvCacheLayout layout = mixed ? base : base.for_format(format);
  const std::vector<KvFormatId> formats =
      mixed ? std::vector<KvFormatId>{format, KvFormatId::kBF16, format, format}
            : std::vector<KvFormatId>{format, format};
  const std::vector<int> q_lens = mixed ? std::vector<int>{7, 5, 1, 30} : std::vector<int>{9, 21};
  WriteBatch b = write_batch(base, formats, q_lens, rng);
  const int tokens = b.qo_indptr.back();
  const int width = 3 * heads * dim;  // k | v | unused: strided rows as in the fused QKV buffer
  const Tensor rows = kv_values(tokens, width, heads, dim, rng);
  const TensorView k = rows.view().slice(1, 0, heads * dim).unflatten(1, heads, dim);
  const TensorView v = rows.view().slice(1, heads * dim, 2 * heads * dim).unflatten(1, heads, dim);

  std::vector<uint8_t> want(layout.arena_bytes(), 0xff);
  KvWriteArgs ref{k,
                  v,
                  host_i32(b.slots),
                  TensorView(want.data(), DType::kU8, {static_cast<int64_t>(want.size())}),
                  layout,
                  layer,
                  mixed ? host_i32(b.formats) : TensorView(),
                  mixed ? host_i32(b.qo_indptr) : TensorView()};
  kernels::cpu::write_kv(ref);

  const Tensor d_arena = device_bytes(gpu, std::vector<uint8_t>(want.size(), 0xff));
  const Tensor d_rows = upload(gpu, rows, DType::kBF16);
  const Tensor d_slots = upload_i32(gpu, b.slots), d_formats = upload_i32(gpu, b.formats),
               d_qo = upload_i32(gpu, b.qo_indptr);
  KvWriteArgs args = ref;
  args.k = d_rows.view().slice(1, 0, heads * dim).unflatten(1, heads, dim);
  args.v = d_rows.view().slice(1, heads * dim, 2 * heads * dim).unflatten(1, heads, dim);
  args.slot_mapping = d_slots;
  args.arena = d_arena;
  args.kv_formats = mixed ? d_formats.view() : TensorView();
  args.qo_indptr = mixed ? d_qo.view() : TensorView();
  Tensor d_q, d_positions, d_freq;
  if (fused) {
    d_q = upload(gpu, random_bf16_values({tokens, 8 * dim}, rng), DType::kBF16);
    d_positions = upload_i32(gpu, std::vector<int32_t>(tokens, 0));
    Tensor freq = Tensor::empty(DType::kF32, {dim / 2});
    for (int i = 0; i < dim / 2; ++i) freq.data<float>()[i] = std::pow(10000.0f, -2.0f * i / dim);
    d_freq = upload(gpu, freq, DType::kF32);
    kernels::RopeArgs r;
    r.q = d_q.view().unflatten(1, 8, dim);
    r.k = args.k;
    r.positions = d_positions;
    r.inv_freq = d_freq;
    gpu.rope_write_kv(r, args);
  } else {
    gpu.write_kv(args);
  }
  const std::string diff = byte_diff(host_bytes(gpu, d_arena), want, base.for_format(format));
  EXPECT_TRUE(diff.empty()) << diff;
}

TEST(CudaKvFormats, WriteStoresTheCpuBytes) {
  SIEVE_GPU_OR_SKIP();
  for (const KvFormatId format : kQuantized) {
    for (const int dim : {64, 128, 48}) {
      for (const bool mixed : {false, true}) {
        for (const bool fused : {false, true}) check_write(format, dim, mixed, fused);
      }
    }
  }
}

// A mixed batch over one arena written by the CPU: per sequence (format, kv_len, q_len).
struct AttnSeq {
  KvFormatId format;
  int kv_len, q_len;
};

struct AttnCase {
  std::vector<AttnSeq> seqs;
  int heads, kv_heads, dim;
  bool mixed;      // pass kv_formats (else every sequence is of the first one's format)
  bool compacted;  // per-(layer, KV head) survivors and a dead gap
};

void run_attention(const AttnCase& c, uint32_t seed) {
  std::ostringstream label;
  for (const AttnSeq& s : c.seqs)
    label << name_of(s.format) << "(" << s.kv_len << "/" << s.q_len << ") ";
  SCOPED_TRACE(::testing::Message()
               << "seed " << seed << ", dim " << c.dim << ", heads " << c.heads << "/" << c.kv_heads
               << ", " << label.str() << (c.compacted ? "compacted" : ""));
  kernels::Backend& gpu = *::sieve::cuda_test::gpu();
  std::mt19937 rng(seed);
  const int layers = 2, layer = 1, num_seqs = static_cast<int>(c.seqs.size());
  int pages_needed = 0;
  const KvCacheLayout probe = bf16_arena(layers, c.kv_heads, c.dim, 16, 1);
  for (const AttnSeq& s : c.seqs) {
    pages_needed += s.kv_len / probe.for_format(s.format).tokens_per_page + 1;
  }
  const KvCacheLayout base = bf16_arena(layers, c.kv_heads, c.dim, 16, pages_needed + 4);
  const KvCacheLayout layout = c.mixed ? base : base.for_format(c.seqs[0].format);
  std::vector<uint8_t> arena(layout.arena_bytes(), 0xff);
  std::vector<int32_t> pool(base.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> qo_indptr{0}, kv_indptr{0}, kv_indices, kv_lens, formats, head_lens,
      gap_ends;
  size_t next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const AttnSeq& q = c.seqs[s];
    const KvCacheLayout sl = base.for_format(q.format);
    const int tpp = sl.tokens_per_page;
    std::vector<int32_t> table;
    for (int p = 0; p < (q.kv_len + tpp - 1) / tpp; ++p) table.push_back(pool[next++]);
    // The whole sequence's K/V (history and this step's) written by the CPU in its format.
    std::vector<int32_t> slots(q.kv_len);
    for (int j = 0; j < q.kv_len; ++j) slots[j] = table[j / tpp] * tpp + j % tpp;
    const Tensor rows = kv_values(q.kv_len, 2 * c.kv_heads * c.dim, c.kv_heads, c.dim, rng);
    const TensorView k =
        rows.view().slice(1, 0, c.kv_heads * c.dim).unflatten(1, c.kv_heads, c.dim);
    const TensorView v = rows.view()
                             .slice(1, c.kv_heads * c.dim, 2 * c.kv_heads * c.dim)
                             .unflatten(1, c.kv_heads, c.dim);
    kernels::cpu::write_kv(
        {k,
         v,
         host_i32(slots),
         TensorView(arena.data(), DType::kU8, {static_cast<int64_t>(arena.size())}),
         sl,
         layer,
         {},
         {}});
    qo_indptr.push_back(qo_indptr.back() + q.q_len);
    kv_indices.insert(kv_indices.end(), table.begin(), table.end());
    kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
    kv_lens.push_back(q.kv_len);
    formats.push_back(static_cast<int32_t>(q.format));
    const int history = q.kv_len - q.q_len;
    const int gap_end =
        c.compacted ? history - static_cast<int>(rng() % (history / 2 + 1)) : q.kv_len;
    gap_ends.push_back(gap_end);
    for (int l = 0; l < layers; ++l) {
      for (int h = 0; h < c.kv_heads; ++h) {
        const int len = c.compacted ? static_cast<int>(rng() % (gap_end + 1)) : q.kv_len;
        head_lens.push_back(len);
        if (l != layer) continue;
        // Dead slots: their scales (or bf16 elements) NaN, so reading one fails.
        for (int j = len; j < gap_end; ++j) {
          const size_t page_base =
              (static_cast<size_t>(layer) * sl.num_pages + table[j / tpp]) * sl.layer_page_bytes();
          for (int kv = 0; kv < 2; ++kv) {
            const kvcache::KvFormat& f = kvcache::kv_format(q.format);
            if (f.quantized()) {
              std::fill_n(arena.begin() + page_base + sl.meta_offset(kv, h, j % tpp),
                          f.meta_bytes(c.dim), 0xff);
            } else {
              std::fill_n(arena.begin() + page_base + sl.data_offset(kv, h, j % tpp),
                          f.data_bytes(c.dim), 0xff);
            }
          }
        }
      }
    }
  }
  const int tokens = qo_indptr.back();
  const Tensor q = random_bf16_values({tokens, c.heads * c.dim}, rng);
  AttentionArgs ref;
  ref.q = q.view().unflatten(1, c.heads, c.dim);
  Tensor want = Tensor::empty(DType::kF32, {tokens, c.heads, c.dim});
  ref.out = want;
  ref.arena = TensorView(arena.data(), DType::kU8, {static_cast<int64_t>(arena.size())});
  ref.layout = layout;
  ref.layer = layer;
  ref.qo_indptr = host_i32(qo_indptr);
  ref.kv_indptr = host_i32(kv_indptr);
  ref.kv_indices = host_i32(kv_indices);
  ref.kv_lens = host_i32(kv_lens);
  if (c.compacted) {
    ref.kv_head_lens = host_i32(head_lens);
    ref.kv_gap_ends = host_i32(gap_ends);
  }
  if (c.mixed) ref.kv_formats = host_i32(formats);
  ref.scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  kernels::cpu::attention(ref);

  const Tensor d_arena = device_bytes(gpu, arena);
  const Tensor d_q = upload(gpu, q, DType::kBF16);
  const Tensor d_out = poisoned(gpu, DType::kBF16, {tokens, c.heads, c.dim});
  const Tensor d_qo = upload_i32(gpu, qo_indptr), d_kv_indptr = upload_i32(gpu, kv_indptr),
               d_kv_indices = upload_i32(gpu, kv_indices), d_kv_lens = upload_i32(gpu, kv_lens),
               d_formats = upload_i32(gpu, formats), d_head_lens = upload_i32(gpu, head_lens),
               d_gap_ends = upload_i32(gpu, gap_ends);
  AttentionArgs args = ref;
  args.q = d_q.view().unflatten(1, c.heads, c.dim);
  args.out = d_out;
  args.arena = d_arena;
  args.qo_indptr = d_qo;
  args.kv_indptr = d_kv_indptr;
  args.kv_indices = d_kv_indices;
  args.kv_lens = d_kv_lens;
  args.kv_formats = c.mixed ? d_formats.view() : TensorView();
  args.kv_head_lens = c.compacted ? d_head_lens.view() : TensorView();
  args.kv_gap_ends = c.compacted ? d_gap_ends.view() : TensorView();
  gpu.attention(args);
  const Tensor got = download(gpu, d_out);

  // Per sequence: on the FMA kernel (decode rows, generic head dims) quantized K/V are dequantized
  // exactly (q · s fits f32), so the GPU differs from the CPU only by f32 summation order and its
  // bf16 output (half an ulp: 2^-9 relative), hence 4e-3; a prefill chunk on the tensor-core
  // kernel rounds P (and quantized K/V) to bf16 too: the bf16 band, 1e-2.
  const int group = c.heads / c.kv_heads;
  for (int s = 0; s < num_seqs; ++s) {
    const AttnSeq& sq = c.seqs[s];
    const int64_t begin = static_cast<int64_t>(qo_indptr[s]) * c.heads * c.dim;
    const int64_t n = static_cast<int64_t>(sq.q_len) * c.heads * c.dim;
    const bool tensor_cores = (c.dim == 64 || c.dim == 128) && sq.q_len * group >= 64;
    EXPECT_LT(relative_error(got.data<float>() + begin, want.data<float>() + begin, n),
              tensor_cores ? kBf16Tolerance : 4e-3)
        << "sequence " << s << " (" << name_of(sq.format) << ", kv_len " << sq.kv_len << ", q_len "
        << sq.q_len << ")";
  }
}

class CudaKvFormatAttention : public ::testing::TestWithParam<uint32_t> {};

TEST_P(CudaKvFormatAttention, DecodeRowsOfOneFormat) {
  SIEVE_GPU_OR_SKIP();
  for (const KvFormatId f : kQuantized) {
    for (const int dim : {64, 128, 48}) {
      run_attention({{{f, 37, 1}, {f, 300, 1}, {f, 1, 1}, {f, 129, 1}},
                     32 / (dim / 32),
                     2,
                     dim,
                     false,
                     false},
                    GetParam());
    }
  }
}

TEST_P(CudaKvFormatAttention, PrefillChunksAndLongContextsOfOneFormat) {
  SIEVE_GPU_OR_SKIP();
  for (const KvFormatId f : kQuantized) {
    run_attention({{{f, 200, 80}, {f, 3000, 1}, {f, 64, 64}}, 16, 4, 128, false, false},
                  GetParam());
  }
}

TEST_P(CudaKvFormatAttention, MixedBatchOfEveryFormatWithBf16) {
  SIEVE_GPU_OR_SKIP();
  using F = KvFormatId;
  for (const int dim : {128, 64}) {
    // Decode rows and prefill chunks of each format, a long context (split-K) among them.
    run_attention({{{F::kBF16, 50, 1},
                    {F::kInt8, 90, 1},
                    {F::kFp8E4M3, 2100, 1},
                    {F::kInt4, 17, 1},
                    {F::kBF16, 300, 100},
                    {F::kInt4, 150, 70},
                    {F::kInt8, 40, 40},
                    {F::kFp8E4M3, 77, 20}},
                   32,
                   8,
                   dim,
                   true,
                   false},
                  GetParam());
  }
}

TEST_P(CudaKvFormatAttention, CompactedHeadsOfEachFormat) {
  SIEVE_GPU_OR_SKIP();
  using F = KvFormatId;
  run_attention({{{F::kInt8, 120, 1}, {F::kBF16, 200, 1}, {F::kInt4, 400, 3}, {F::kFp8E4M3, 90, 1}},
                 8,
                 2,
                 128,
                 true,
                 true},
                GetParam());
  run_attention({{{F::kInt4, 300, 1}, {F::kInt4, 100, 2}}, 8, 2, 64, false, true}, GetParam());
}

// Decode launches (head_dim 64/128, one row a warp) take the quantized decode kernel: contexts
// left whole (32 KV heads and 29 sequences fill the H100's wave, so nothing is split: every warp
// of a block runs several tiles, their counts uneven, up to 24 for the 3000-token one), and a
// batch mixing every format with rows of one to three tokens (two chunks of a sequence, causal
// limits inside a tile).
TEST_P(CudaKvFormatAttention, DecodeKernelWholeContextsAndMixedRows) {
  SIEVE_GPU_OR_SKIP();
  for (const KvFormatId f : kQuantized) {
    std::vector<AttnSeq> seqs;
    for (int s = 0; s < 28; ++s) seqs.push_back({f, 300 + 13 * s, 1});
    seqs.push_back({f, 3000, 1});
    run_attention({seqs, 128, 32, 64, false, false}, GetParam());
  }
  using F = KvFormatId;
  for (const int dim : {128, 64}) {
    run_attention({{{F::kInt4, 1000, 1},
                    {F::kFp8E4M3, 33, 2},
                    {F::kBF16, 500, 1},
                    {F::kInt8, 700, 3},
                    {F::kInt4, 64, 2},
                    {F::kFp8E4M3, 1500, 1},
                    {F::kInt8, 31, 1}},
                   16,
                   4,
                   dim,
                   true,
                   false},
                  GetParam());
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, CudaKvFormatAttention, ::testing::Values(1u, 2u));

// compact_kv and copy_pages on a quantized sequence: the bytes equal the CPU ops' on the same
// arena, scales moved with their elements.
TEST(CudaKvFormats, CompactAndCopyPagesMoveScales) {
  SIEVE_GPU_OR_SKIP();
  kernels::Backend& gpu = *gpu_backend;
  for (const KvFormatId format : kQuantized) {
    for (const int dim : {128, 48}) {
      SCOPED_TRACE(::testing::Message() << name_of(format) << " head_dim " << dim);
      std::mt19937 rng(static_cast<uint32_t>(dim + static_cast<int>(format)));
      const int layers = 2, heads = 4;
      const KvCacheLayout l = bf16_arena(layers, heads, dim, 8, 12).for_format(format);
      const int tpp = l.tokens_per_page, tokens = 3 * tpp + 5;
      std::vector<int32_t> table{5, 0, 9, 2};
      std::vector<uint8_t> arena(l.arena_bytes(), 0xff);
      std::vector<int32_t> slots(tokens);
      for (int j = 0; j < tokens; ++j) slots[j] = table[j / tpp] * tpp + j % tpp;
      const Tensor rows = kv_values(tokens, 2 * heads * dim, heads, dim, rng);
      const TensorView k = rows.view().slice(1, 0, heads * dim).unflatten(1, heads, dim);
      const TensorView v =
          rows.view().slice(1, heads * dim, 2 * heads * dim).unflatten(1, heads, dim);
      const TensorView arena_view(arena.data(), DType::kU8, {static_cast<int64_t>(arena.size())});
      for (int layer = 0; layer < layers; ++layer) {
        kernels::cpu::write_kv({k, v, host_i32(slots), arena_view, l, layer, {}, {}});
      }
      const Tensor d_arena = device_bytes(gpu, arena);

      std::vector<int32_t> src{0, 9}, dst{7, 11};
      kernels::cpu::copy_pages({arena_view, l, host_i32(src), host_i32(dst)});
      gpu.copy_pages({d_arena, l, upload_i32(gpu, src), upload_i32(gpu, dst)});
      std::string diff = byte_diff(host_bytes(gpu, d_arena), arena, l);
      EXPECT_TRUE(diff.empty()) << "copy_pages: " << diff;

      const int max_keep = tokens;
      std::vector<int32_t> keep(layers * heads * max_keep, 0), counts(layers * heads);
      for (int list = 0; list < layers * heads; ++list) {
        std::vector<int32_t> all(tokens);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        counts[list] = 1 + static_cast<int>(rng() % (tokens - 1));
        std::sort(all.begin(), all.begin() + counts[list]);
        std::copy_n(all.begin(), counts[list], keep.begin() + list * max_keep);
      }
      kernels::cpu::compact_kv({arena_view, l, host_i32(table),
                                TensorView(keep.data(), DType::kI32, {layers, heads, max_keep}),
                                TensorView(counts.data(), DType::kI32, {layers, heads})});
      const Tensor d_keep = upload_i32(gpu, keep);
      gpu.compact_kv({d_arena, l, upload_i32(gpu, table),
                      d_keep.view().reshape({layers, heads, max_keep}),
                      upload_i32(gpu, counts).view().reshape({layers, heads})});
      diff = byte_diff(host_bytes(gpu, d_arena), arena, l);
      EXPECT_TRUE(diff.empty()) << "compact_kv: " << diff;
    }
  }
}

// kv_signals and expected_logits over a quantized sequence the CPU wrote (a compacted one: dead
// slots NaN): the same dequantized values on both sides, f32 arithmetic, the signals' 1e-3.
TEST(CudaKvFormats, SignalsAndExpectedLogitsReadQuantizedKeys) {
  SIEVE_GPU_OR_SKIP();
  kernels::Backend& gpu = *gpu_backend;
  for (const KvFormatId format : kQuantized) {
    SCOPED_TRACE(name_of(format));
    std::mt19937 rng(40 + static_cast<uint32_t>(format));
    const int layers = 2, kv_heads = 2, group = 4, heads = kv_heads * group, dim = 128;
    const KvCacheLayout l = bf16_arena(layers, kv_heads, dim, 16, 20).for_format(format);
    const int tpp = l.tokens_per_page, tokens = 150, windows = 16;
    std::vector<int32_t> table;
    for (int p = 0; p < (tokens + tpp - 1) / tpp; ++p) table.push_back((p * 7 + 3) % l.num_pages);
    std::vector<uint8_t> arena(l.arena_bytes(), 0xff);
    std::vector<int32_t> slots(tokens);
    for (int j = 0; j < tokens; ++j) slots[j] = table[j / tpp] * tpp + j % tpp;
    const TensorView arena_view(arena.data(), DType::kU8, {static_cast<int64_t>(arena.size())});
    for (int layer = 0; layer < layers; ++layer) {
      const Tensor rows = kv_values(tokens, 2 * kv_heads * dim, kv_heads, dim, rng);
      kernels::cpu::write_kv(
          {rows.view().slice(1, 0, kv_heads * dim).unflatten(1, kv_heads, dim),
           rows.view().slice(1, kv_heads * dim, 2 * kv_heads * dim).unflatten(1, kv_heads, dim),
           host_i32(slots),
           arena_view,
           l,
           layer,
           {},
           {}});
    }
    const int gap_end = tokens - 30;
    std::vector<int32_t> head_lens{gap_end, 0, 57, 101};
    // Dead slots' scales NaN: a read of one turns its outputs NaN.
    for (int layer = 0; layer < layers; ++layer) {
      for (int h = 0; h < kv_heads; ++h) {
        for (int j = head_lens[layer * kv_heads + h]; j < gap_end; ++j) {
          const size_t page_base =
              (static_cast<size_t>(layer) * l.num_pages + table[j / tpp]) * l.layer_page_bytes();
          for (int kv = 0; kv < 2; ++kv) {
            std::fill_n(arena.begin() + page_base + l.meta_offset(kv, h, j % tpp),
                        kvcache::kv_format(format).meta_bytes(dim), 0xff);
          }
        }
      }
    }
    const int slot_stride = tokens + 3;
    const Tensor queries = random_bf16_values({layers, windows, heads * dim}, rng);

    kernels::KvSignalArgs ref;
    ref.arena = arena_view;
    ref.layout = l;
    ref.page_table = host_i32(table);
    ref.num_tokens = tokens;
    ref.head_lens = TensorView(head_lens.data(), DType::kI32, {layers * kv_heads});
    ref.gap_end = gap_end;
    ref.queries = queries.view().unflatten(2, heads, dim);
    ref.num_queries = windows;
    ref.scale = 1.0f / std::sqrt(static_cast<float>(dim));
    ref.slot_stride = slot_stride;
    std::vector<Tensor> want;
    for (int i = 0; i < 5; ++i) {
      want.push_back(Tensor::empty(DType::kF32, {layers, i < 1 ? heads : kv_heads, slot_stride}));
      std::fill_n(want.back().data<float>(), want.back().numel(), NAN);
    }
    ref.window_attention = want[0];
    ref.window_attention_group_max = want[1];
    ref.key_norms = want[2];
    ref.value_norms = want[3];
    ref.key_anchor_dot = want[4];
    kernels::cpu::kv_signals(ref);

    const Tensor d_arena = device_bytes(gpu, arena);
    const Tensor d_queries = upload(gpu, queries, DType::kBF16);
    std::vector<Tensor> got;
    for (int i = 0; i < 5; ++i) {
      got.push_back(poisoned(gpu, DType::kF32, {layers, i < 1 ? heads : kv_heads, slot_stride}));
    }
    kernels::KvSignalArgs args = ref;
    args.arena = d_arena;
    args.queries = d_queries.view().unflatten(2, heads, dim);
    args.window_attention = got[0];
    args.window_attention_group_max = got[1];
    args.key_norms = got[2];
    args.value_norms = got[3];
    args.key_anchor_dot = got[4];
    gpu.kv_signals(args);
    const char* names[] = {"window_attention", "window_attention_group_max", "key_norms",
                           "value_norms", "key_anchor_dot"};
    for (int i = 0; i < 5; ++i) {
      const Tensor g = download(gpu, got[i]);
      std::vector<float> gv, wv;
      int64_t mismatched_nan = 0;
      for (int64_t e = 0; e < g.numel(); ++e) {
        const float a = g.data<float>()[e], b = want[i].data<float>()[e];
        if (std::isnan(a) != std::isnan(b)) ++mismatched_nan;
        if (!std::isnan(b)) gv.push_back(a), wv.push_back(b);
      }
      EXPECT_EQ(mismatched_nan, 0) << names[i] << ": entries NaN on one side only";
      ASSERT_FALSE(wv.empty()) << names[i];
      EXPECT_LT(relative_error(gv.data(), wv.data(), static_cast<int64_t>(wv.size())), 1e-3)
          << names[i];
    }

    // expected_logits from moments of random queries.
    const int64_t width = static_cast<int64_t>(dim) * (dim + 1);
    Tensor moments = Tensor::empty(DType::kF32, {layers, heads, width});
    std::normal_distribution<float> normal;
    for (int lh = 0; lh < layers * heads; ++lh) {
      float* m = moments.data<float>() + lh * width;
      std::vector<float> mu(dim);
      for (float& x : mu) x = 0.3f * normal(rng);
      for (int i = 0; i < dim; ++i) m[i] = 8 * mu[i];
      for (int i = 0; i < dim; ++i) {
        for (int j = 0; j < dim; ++j) m[dim + i * dim + j] = 8 * (mu[i] * mu[j] + (i == j));
      }
    }
    std::vector<float> cos(dim / 2), sin(dim / 2);
    for (int i = 0; i < dim / 2; ++i) cos[i] = std::cos(0.3f * i), sin[i] = std::sin(0.3f * i);
    kernels::ExpectedLogitArgs eref;
    eref.arena = arena_view;
    eref.layout = l;
    eref.page_table = host_i32(table);
    eref.num_tokens = tokens;
    eref.head_lens = ref.head_lens;
    eref.gap_end = gap_end;
    eref.moments = moments;
    eref.count = 8;
    eref.rope_cos = TensorView(cos.data(), DType::kF32, {dim / 2});
    eref.rope_sin = TensorView(sin.data(), DType::kF32, {dim / 2});
    eref.scale = ref.scale;
    eref.slot_stride = slot_stride;
    Tensor ewant = Tensor::empty(DType::kF32, {layers, heads, slot_stride});
    std::fill_n(ewant.data<float>(), ewant.numel(), NAN);
    eref.out = ewant;
    kernels::cpu::expected_logits(eref);
    const Tensor d_moments = upload(gpu, moments, DType::kF32);
    const Tensor egot = poisoned(gpu, DType::kF32, {layers, heads, slot_stride});
    kernels::ExpectedLogitArgs eargs = eref;
    eargs.arena = d_arena;
    eargs.moments = d_moments;
    eargs.out = egot;
    gpu.expected_logits(eargs);
    const Tensor g = download(gpu, egot);
    std::vector<float> gv, wv;
    int64_t mismatched_nan = 0;
    for (int64_t e = 0; e < g.numel(); ++e) {
      const float a = g.data<float>()[e], b = ewant.data<float>()[e];
      if (std::isnan(a) != std::isnan(b)) ++mismatched_nan;
      if (!std::isnan(b)) gv.push_back(a), wv.push_back(b);
    }
    EXPECT_EQ(mismatched_nan, 0) << "expected_logits: entries NaN on one side only";
    ASSERT_FALSE(wv.empty());
    EXPECT_LT(relative_error(gv.data(), wv.data(), static_cast<int64_t>(wv.size())), 1e-4)
        << "expected_logits";
  }
}

// Teacher-forced logits of every step (the prompt in chunks of 64, then the continuation) with a
// cache of `format` (nullopt: the backend's own, f32 on the CPU and bf16 on the GPU).
std::vector<std::vector<float>> teacher_forced(models::Transformer& model,
                                               kernels::Backend& backend,
                                               std::optional<KvFormatId> format,
                                               const test_support::GoldenCase& c) {
  const int vocab = model.config().vocab_size;
  test_support::PagedSequence seq(model, backend,
                                  static_cast<int>(c.prompt.size() + c.greedy.size()), format);
  const float* logits = nullptr;
  for (size_t begin = 0; begin < c.prompt.size(); begin += 64) {
    const size_t end = std::min(c.prompt.size(), begin + 64);
    logits = seq.step(std::vector<int32_t>(c.prompt.begin() + begin, c.prompt.begin() + end),
                      static_cast<int>(c.prompt.size()));
  }
  std::vector<std::vector<float>> rows{std::vector<float>(logits, logits + vocab)};
  for (size_t i = 0; i + 1 < c.greedy.size(); ++i) {
    logits = seq.step({c.greedy[i]});
    rows.emplace_back(logits, logits + vocab);
  }
  return rows;
}

// The worst step's relative L2 between two runs' logits, and the steps whose argmax agree.
std::pair<double, int> compare_runs(const std::vector<std::vector<float>>& a,
                                    const std::vector<std::vector<float>>& b) {
  double worst = 0;
  int agree = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst,
                     relative_error(a[i].data(), b[i].data(), static_cast<int64_t>(a[i].size())));
    agree += std::max_element(a[i].begin(), a[i].end()) - a[i].begin() ==
             std::max_element(b[i].begin(), b[i].end()) - b[i].begin();
  }
  return {worst, agree};
}

// The GPU's int8 run differs from the CPU's int8 run by bf16 weights and activations (as its bf16
// run differs from the CPU's f32 run) and by int8 rounding of slightly different keys; a wrong
// scale, layout or dequantization would be far outside 2x the bf16 gap plus 1e-2. fp8 and int4
// are reported (their rounding steps are larger, so their gap has no bf16-derived bound).
TEST(CudaKvFormatModel, Int8RunsTrackTheCpuInt8Runs) {
  SIEVE_GPU_OR_SKIP();
  std::unique_ptr<kernels::Backend> cpu = kernels::cpu::make_cpu_backend();
  for (const char* name : {"llama3", "qwen2"}) {
    SCOPED_TRACE(name);
    const models::StepLimits limits{64, 1, 1024};
    test_support::GoldenModel on_gpu =
        test_support::load_golden_model(golden_dir() / name, *gpu_backend, limits);
    test_support::GoldenModel on_cpu =
        test_support::load_golden_model(golden_dir() / name, *cpu, limits);
    for (size_t i = 0; i < std::min<size_t>(2, on_gpu.cases.size()); ++i) {
      const test_support::GoldenCase& c = on_gpu.cases[i];
      if (c.greedy.empty()) continue;
      const auto [base_error, base_agree] =
          compare_runs(teacher_forced(*on_gpu.model, *gpu_backend, std::nullopt, c),
                       teacher_forced(*on_cpu.model, *cpu, std::nullopt, c));
      std::printf("%s case %zu: bf16 GPU vs f32 CPU: worst step %.4f, argmax %d/%zu\n", name, i,
                  base_error, base_agree, c.greedy.size());
      for (const KvFormatId f : {KvFormatId::kInt8, KvFormatId::kFp8E4M3, KvFormatId::kInt4}) {
        const auto [error, agree] = compare_runs(teacher_forced(*on_gpu.model, *gpu_backend, f, c),
                                                 teacher_forced(*on_cpu.model, *cpu, f, c));
        std::printf("%s case %zu: %s GPU vs %s CPU: worst step %.4f, argmax %d/%zu\n", name, i,
                    name_of(f), name_of(f), error, agree, c.greedy.size());
        EXPECT_TRUE(std::isfinite(error)) << name_of(f);
        if (f == KvFormatId::kInt8) {
          EXPECT_LT(error, 2 * base_error + 1e-2) << "int8, case " << i;
          EXPECT_GE(agree, base_agree - 2) << "int8 greedy agreement, case " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace sieve::cuda_test
