// Decode attention time per KV format on the CUDA backend: one layer's attention call (plan, main
// kernel, combine) for `seqs` sequences of `ctx` tokens each, one query row per sequence, at a
// model's head shape (default Llama-3.1-8B: 32 query heads, 8 KV heads, head_dim 128), every
// sequence in one format (the layout's: the single-format path a batch of one format takes) or,
// with --mixed, the batch's sequences cycling through bf16, fp8_e4m3, int8 and int4 (kv_formats).
// The cache is filled by write_kv from random values. Prints one line per (format, seqs) with
// the mean time of --iters calls after a warm-up, and the KV bytes read per second.
//   sieve_bench_kv_format_attention [--seqs 16,64] [--ctx 4096] [--formats bf16,fp8_e4m3,int8,int4]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "core/check.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/quant_attention.h"
#include "kvcache/formats.h"

namespace sieve {
namespace {

using kernels::AttentionArgs;
using kernels::Backend;
using kernels::KvCacheLayout;
using kvcache::KvFormatId;

Tensor alloc(Backend& b, DType dtype, std::initializer_list<int64_t> shape) {
  auto t = b.allocate(dtype, shape);
  SIEVE_CHECK(t.ok()) << t.status();
  return *std::move(t);
}

Tensor upload_i32(Backend& b, std::vector<int32_t> v) {
  Tensor t = alloc(b, DType::kI32, {static_cast<int64_t>(v.size())});
  b.copy(t, TensorView(v.data(), DType::kI32, {static_cast<int64_t>(v.size())}));
  return t;
}

struct Shape {
  int heads, kv_heads, dim, ctx, bf16_tpp;
};

// Mean milliseconds of one attention call over `seqs` sequences of `formats` (cycled).
double time_attention(Backend& gpu, const Shape& s, int seqs,
                      const std::vector<KvFormatId>& formats, bool mixed, int iters) {
  KvCacheLayout base;
  base.num_layers = 1;
  base.num_kv_heads = s.kv_heads;
  base.head_dim = s.dim;
  base.page_bytes = 2ull * s.kv_heads * s.bf16_tpp * s.dim * 2;
  std::vector<int32_t> qo{0}, kv_indptr{0}, kv_indices, kv_lens, seq_formats;
  int pages = 0;
  for (int i = 0; i < seqs; ++i) {
    const KvFormatId f = formats[i % formats.size()];
    const int tpp = base.for_format(f).tokens_per_page;
    const int n = (s.ctx + tpp - 1) / tpp;
    for (int p = 0; p < n; ++p) kv_indices.push_back(pages++);
    kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
    qo.push_back(i + 1);
    kv_lens.push_back(s.ctx);
    seq_formats.push_back(static_cast<int32_t>(f));
  }
  base.num_pages = pages;
  const KvCacheLayout layout = base.for_format(mixed ? KvFormatId::kBF16 : formats[0]);
  Tensor arena = alloc(gpu, DType::kU8, {static_cast<int64_t>(layout.arena_bytes())});
  // Fill: each sequence's K/V written by write_kv from random bf16 values.
  Tensor kv = alloc(gpu, DType::kBF16, {s.ctx, 2, s.kv_heads, s.dim});
  gpu.fill_random(kv, 7, 0.0f, 1.0f);
  for (int i = 0; i < seqs; ++i) {
    const int tpp = base.for_format(formats[i % formats.size()]).tokens_per_page;
    std::vector<int32_t> slots(s.ctx);
    for (int j = 0; j < s.ctx; ++j) slots[j] = kv_indices[kv_indptr[i] + j / tpp] * tpp + j % tpp;
    const Tensor d_slots = upload_i32(gpu, slots);
    const Tensor one_format = upload_i32(gpu, {seq_formats[i]});
    const Tensor one_qo = upload_i32(gpu, {0, s.ctx});
    kernels::KvWriteArgs w{kv.view().select(1, 0),
                           kv.view().select(1, 1),
                           d_slots,
                           arena,
                           layout,
                           0,
                           mixed ? one_format.view() : TensorView(),
                           mixed ? one_qo.view() : TensorView()};
    gpu.write_kv(w);
  }
  Tensor q = alloc(gpu, DType::kBF16, {seqs, s.heads, s.dim});
  gpu.fill_random(q, 8, 0.0f, 1.0f);
  Tensor out = alloc(gpu, DType::kBF16, {seqs, s.heads, s.dim});
  Tensor workspace = alloc(gpu, DType::kU8,
                           {static_cast<int64_t>(std::max<size_t>(
                               gpu.attention_workspace_bytes(seqs, s.kv_heads, s.dim), 256))});
  const Tensor d_qo = upload_i32(gpu, qo), d_kv_indptr = upload_i32(gpu, kv_indptr),
               d_kv_indices = upload_i32(gpu, kv_indices), d_kv_lens = upload_i32(gpu, kv_lens),
               d_formats = upload_i32(gpu, seq_formats);
  AttentionArgs a;
  a.q = q;
  a.out = out;
  a.arena = arena;
  a.layout = layout;
  a.layer = 0;
  a.qo_indptr = d_qo;
  a.kv_indptr = d_kv_indptr;
  a.kv_indices = d_kv_indices;
  a.kv_lens = d_kv_lens;
  a.kv_formats = mixed ? d_formats.view() : TensorView();
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.dim));
  a.min_q_len = a.max_q_len = 1;
  a.workspace = workspace;
  for (int i = 0; i < 5; ++i) gpu.attention(a);
  gpu.synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) gpu.attention(a);
  gpu.synchronize();
  const std::chrono::duration<double, std::milli> elapsed =
      std::chrono::steady_clock::now() - start;
  return elapsed.count() / iters;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

int run(int argc, char** argv) {
  CLI::App app("decode attention time per KV format on the CUDA backend");
  std::string seqs_list = "16,64", formats_list = "bf16,fp8_e4m3,int8,int4";
  Shape s{32, 8, 128, 4096, 16};
  int iters = 50;
  bool mixed = false;
  app.add_option("--seqs", seqs_list, "batch sizes, comma-separated");
  app.add_option("--ctx", s.ctx, "tokens of context per sequence");
  app.add_option("--formats", formats_list, "KV formats, comma-separated");
  app.add_option("--heads", s.heads);
  app.add_option("--kv-heads", s.kv_heads);
  app.add_option("--head-dim", s.dim);
  app.add_option("--page-tokens", s.bf16_tpp, "bf16 tokens per page (the engine's page size)");
  app.add_option("--iters", iters);
  app.add_flag("--mixed", mixed, "one batch cycling through the formats (kv_formats)");
  CLI11_PARSE(app, argc, argv);
  auto backend = kernels::cuda::make_cuda_backend(0);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  Backend& gpu = **backend;
  std::vector<KvFormatId> formats;
  for (const std::string& name : split(formats_list)) {
    auto f = kvcache::parse_kv_format(name);
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", f.status().ToString().c_str());
      return 1;
    }
    formats.push_back(*f);
  }
  std::printf("%s; heads %d/%d, head_dim %d, ctx %d, pages of %d bf16 tokens\n", gpu.name().c_str(),
              s.heads, s.kv_heads, s.dim, s.ctx, s.bf16_tpp);
  std::printf("quantized decode attention: %s\n", kernels::cuda::quant_decode_attention_path());
  for (const std::string& n : split(seqs_list)) {
    const int seqs = std::stoi(n);
    if (mixed) {
      const double ms = time_attention(gpu, s, seqs, formats, true, iters);
      std::printf("mixed seqs %d: %.3f ms\n", seqs, ms);
      continue;
    }
    for (const KvFormatId f : formats) {
      const double ms = time_attention(gpu, s, seqs, {f}, false, iters);
      const double bytes = 2.0 * seqs * s.ctx * s.kv_heads *
                           static_cast<double>(kvcache::kv_format(f).bytes_per_token_head(s.dim));
      std::printf("%-9s seqs %3d: %.3f ms, KV %.2f GB/s\n", kvcache::kv_format(f).name.data(), seqs,
                  ms, bytes / ms / 1e6);
    }
  }
  return 0;
}

}  // namespace
}  // namespace sieve

int main(int argc, char** argv) { return sieve::run(argc, argv); }
