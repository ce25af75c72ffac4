// The CUDA backend op by op: TensorView checks, unpacking into the launchers' plain arguments,
// and the launch on the backend's one stream (docs/design.md, "Backends"). Small index arrays that
// arrive in host memory (sampling parameters, say) are staged into device buffers first.

#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <array>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/embed.h"
#include "kernels/cuda/fill_random.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/moments.h"
#include "kernels/cuda/penalties.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/rows.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/signals.h"
#include "kernels/cuda/silu_mul.h"
#include "kernels/cuda/softmax.h"

namespace sieve::kernels::cuda {
namespace {

// Frees device memory once no queued work can still use it (frees are rare: start-up sizing,
// shutdown, tests). At exit the runtime may already be unloaded; that is not worth an abort.
void free_device(void* p) {
  cudaError_t error = cudaDeviceSynchronize();
  if (error == cudaSuccess) error = cudaFree(p);
  if (error != cudaErrorCudartUnloading) SIEVE_CUDA_CHECK(error);
}

// A device buffer that grows on demand (never shrinks); the old one is freed after the work that
// may still read it.
class GrowingBuffer {
 public:
  GrowingBuffer() = default;
  GrowingBuffer(const GrowingBuffer&) = delete;
  GrowingBuffer& operator=(const GrowingBuffer&) = delete;
  ~GrowingBuffer() {
    if (data_) free_device(data_);
  }

  void* ensure(size_t bytes) {
    if (bytes <= bytes_ && data_) return data_;
    if (data_) free_device(data_);
    bytes_ = std::max<size_t>(bytes, 2 * bytes_);
    SIEVE_CUDA_CHECK(cudaMalloc(&data_, bytes_));
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

StridedRows rows_of(const TensorView& v) {
  SIEVE_CHECK(v.ndim() >= 1 && v.ndim() <= 4) << "rank " << v.ndim();
  SIEVE_CHECK_EQ(v.stride(v.ndim() - 1), 1)
      << "last dimension must be contiguous: " << v.shape_string();
  StridedRows rows;
  rows.data = v.raw();
  rows.row_size = v.size(v.ndim() - 1);
  rows.num_lead = v.ndim() - 1;
  for (int d = 0; d + 1 < v.ndim(); ++d) {
    rows.sizes[d] = v.size(d);
    rows.strides[d] = v.stride(d);
  }
  return rows;
}

void check_device(const TensorView& v, const char* what) {
  SIEVE_CHECK(v.device() == Device::kCuda) << what << " must be on the CUDA device";
}

void check_bf16(const TensorView& v, const char* what) {
  check_device(v, what);
  SIEVE_CHECK(v.dtype() == DType::kBF16) << what << " is " << v.dtype() << ", expected bf16";
}

void check_same_shape(const TensorView& a, const TensorView& b) {
  SIEVE_CHECK_EQ(a.ndim(), b.ndim());
  for (int d = 0; d < a.ndim(); ++d) SIEVE_CHECK_EQ(a.size(d), b.size(d)) << "dim " << d;
}

static_assert(static_cast<int>(kvcache::KvFormatId::kF32) == kKvF32 &&
              static_cast<int>(kvcache::KvFormatId::kBF16) == kKvBF16 &&
              static_cast<int>(kvcache::KvFormatId::kFp8E4M3) == kKvFp8E4M3 &&
              static_cast<int>(kvcache::KvFormatId::kInt8) == kKvInt8 &&
              static_cast<int>(kvcache::KvFormatId::kInt4) == kKvInt4);

KvArena arena_of(const TensorView& arena, const KvCacheLayout& layout) {
  check_device(arena, "KV arena");
  SIEVE_CHECK_GE(arena.nbytes(), layout.arena_bytes());
  const kvcache::KvFormat& format = kvcache::kv_format(layout.kv_format());
  SIEVE_CHECK(layout.dtype == format.dtype)
      << "KV layout of format " << format.name << " with elements of " << layout.dtype;
  SIEVE_CHECK(layout.dtype == DType::kBF16 || layout.dtype == DType::kF32 ||
              layout.dtype == DType::kU8)
      << "KV dtype " << layout.dtype;
  // Byte offsets of quantized rows are computed in 4-byte words by compaction and read so by
  // attention; rows are (head_dim % 8 == 0) and pages must be.
  SIEVE_CHECK(!format.quantized() || layout.layer_page_bytes() % 4 == 0)
      << "CUDA KV arena: pages of " << layout.layer_page_bytes()
      << " bytes a layer; quantized formats need a multiple of 4";
  SIEVE_CHECK_LE(2ull * layout.num_kv_heads * layout.tokens_per_page *
                     format.bytes_per_token_head(layout.head_dim),
                 layout.layer_page_bytes())
      << "CUDA KV arena: " << layout.tokens_per_page << " tokens of " << format.name
      << " do not fit pages of " << layout.layer_page_bytes() << " bytes";
  KvArena a{arena.raw(),     layout.dtype,           layout.num_layers, layout.num_kv_heads,
            layout.head_dim, layout.tokens_per_page, layout.num_pages};
  a.format = static_cast<int>(layout.kv_format());
  a.page_bytes = static_cast<int64_t>(layout.layer_page_bytes());
  return a;
}

// Checks host-side format ids (device ones are the engine's, already checked when admitted).
void check_kv_formats(const TensorView& kv_formats, int64_t num_seqs) {
  SIEVE_CHECK_EQ(kv_formats.numel(), num_seqs) << "kv_formats has one entry per sequence";
  SIEVE_CHECK_EQ(kv_formats.dtype(), DType::kI32);
  if (kv_formats.device() != Device::kCpu) return;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t id = kv_formats.data<int32_t>()[s];
    SIEVE_CHECK(id >= 0 && id < static_cast<int32_t>(std::size(kvcache::kKvFormats)))
        << "kv_formats[" << s << "] = " << id << " is not a KV format";
  }
}

class CudaBackend final : public Backend {
 public:
  using Backend::allocate;

  CudaBackend(int device, std::string name, int num_sms, bool tensor_cores, cudaStream_t stream,
              std::unique_ptr<CublasGemm> gemm)
      : device_(device),
        name_(std::move(name)),
        num_sms_(num_sms),
        tensor_cores_(tensor_cores),
        stream_(stream),
        gemm_(std::move(gemm)) {}

  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    for (cudaGraphExec_t exec : graphs_) cudaGraphExecDestroy(exec);
    gemm_.reset();
    cudaStreamDestroy(stream_);
  }

  BackendKind kind() const override { return BackendKind::kCuda; }
  std::string name() const override { return name_; }
  DType compute_dtype() const override { return DType::kBF16; }

  StatusOr<Tensor> allocate(DType dtype, std::span<const int64_t> shape) override {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const size_t bytes = static_cast<size_t>(numel) * dtype_size(dtype);
    void* data = nullptr;
    const cudaError_t error = cudaMalloc(&data, std::max<size_t>(bytes, 256));
    if (error != cudaSuccess) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      cudaGetLastError();
      return ResourceExhaustedError(
          "out of GPU memory on cuda:" + std::to_string(device_) + ": allocating " +
          std::to_string(bytes) + " bytes with " + std::to_string(free_bytes) + " of " +
          std::to_string(total_bytes) + " free (" + cudaGetErrorString(error) + ")");
    }
    std::shared_ptr<const void> owner(data,
                                      [](const void* p) { free_device(const_cast<void*>(p)); });
    return Tensor(TensorView(data, dtype, shape, Device::kCuda), std::move(owner));
  }

  void copy(const TensorView& dst, const TensorView& src) override {
    SIEVE_CHECK(dst.is_contiguous() && src.is_contiguous());
    SIEVE_CHECK_EQ(dst.nbytes(), src.nbytes());
    if (src.nbytes() == 0) return;
    SIEVE_CUDA_CHECK(
        cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDefault, stream_));
    // The host may reuse or read its side as soon as copy() returns. From pageable host memory
    // (all the host memory Sieve has) the call returns once the source has been staged, so only
    // copies to the host wait for the stream.
    if (dst.device() == Device::kCpu) synchronize();
  }

  void synchronize() override { SIEVE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  void fill_random(const TensorView& out, uint64_t seed, float mean, float std) override {
    check_device(out, "fill_random output");
    SIEVE_CHECK(out.is_contiguous());
    SIEVE_CHECK(out.dtype() == DType::kBF16 || out.dtype() == DType::kF32) << out.dtype();
    launch_fill_random(out.raw(), out.dtype(), out.numel(), seed, mean, std, stream_);
  }

  void embed(const TensorView& ids, const TensorView& table, const TensorView& out) override {
    check_device(table, "embedding table");
    check_device(out, "embed output");
    SIEVE_CHECK_EQ(table.dtype(), out.dtype());
    SIEVE_CHECK_EQ(table.size(table.ndim() - 1), out.size(out.ndim() - 1));
    SIEVE_CHECK_EQ(ids.numel(), rows_of(out).num_rows());
    launch_embed(staged_i32(ids, 0), ids.numel(), rows_of(table), rows_of(out),
                 static_cast<int>(dtype_size(out.dtype())), stream_);
  }

  void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight,
                float eps) override {
    check_bf16(out, "rms_norm output");
    check_bf16(x, "rms_norm input");
    check_bf16(weight, "rms_norm weight");
    check_same_shape(out, x);
    SIEVE_CHECK_EQ(weight.numel(), x.size(x.ndim() - 1));
    launch_rms_norm(rows_of(out), rows_of(x), weight.raw(), eps, stream_);
  }

  void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                    const TensorView& weight, float eps) override {
    check_bf16(out, "add_rms_norm output");
    check_bf16(residual, "add_rms_norm residual");
    check_bf16(x, "add_rms_norm input");
    check_bf16(weight, "add_rms_norm weight");
    check_same_shape(out, x);
    check_same_shape(residual, x);
    SIEVE_CHECK_EQ(weight.numel(), x.size(x.ndim() - 1));
    launch_add_rms_norm(rows_of(out), rows_of(residual), rows_of(x), weight.raw(), eps, stream_);
  }

  void gemm(const GemmArgs& a) override {
    check_bf16(a.x, "gemm x");
    check_bf16(a.w, "gemm w");
    check_device(a.y, "gemm y");
    SIEVE_CHECK(a.y.dtype() == DType::kBF16 || a.y.dtype() == DType::kF32) << a.y.dtype();
    SIEVE_CHECK(a.x.ndim() == 2 && a.w.ndim() == 2 && a.y.ndim() == 2);
    SIEVE_CHECK(a.x.stride(1) == 1 && a.w.stride(1) == 1 && a.y.stride(1) == 1);
    SIEVE_CHECK_EQ(a.x.size(1), a.w.size(1));
    SIEVE_CHECK_EQ(a.y.size(0), a.x.size(0));
    SIEVE_CHECK_EQ(a.y.size(1), a.w.size(0));
    if (!a.bias.empty()) {
      check_bf16(a.bias, "gemm bias");
      SIEVE_CHECK_EQ(a.bias.numel(), a.w.size(0));
    }
    GemmProblem p;
    p.x = a.x.raw();
    p.ldx = a.x.size(0) > 1 ? a.x.stride(0) : a.x.size(1);
    p.w = a.w.raw();
    p.ldw = a.w.size(0) > 1 ? a.w.stride(0) : a.w.size(1);
    p.bias = a.bias.empty() ? nullptr : a.bias.raw();
    p.y = a.y.raw();
    p.ldy = a.y.size(0) > 1 ? a.y.stride(0) : a.y.size(1);
    p.y_dtype = a.y.dtype();
    p.m = a.x.size(0);
    p.n = a.w.size(0);
    p.k = a.x.size(1);
    gemm_->run(p);
  }

  void rope(const RopeArgs& a) override {
    const RopeLaunch r = rope_launch(a);
    launch_rope(r.q, r.k, r.positions, r.inv_freq, r.inv_freq_row_stride, r.half,
                a.attention_scaling, stream_);
  }

  void rope_write_kv(const RopeArgs& r, const KvWriteArgs& w) override {
    // The fused kernel rotates K where RopeArgs has it and copies it from where KvWriteArgs has
    // it: the two must be the same rows.
    const bool same_k = r.k.raw() == w.k.raw() && r.k.ndim() == 3 && w.k.ndim() == 3 &&
                        r.k.size(0) == w.k.size(0) && r.k.size(1) == w.k.size(1) &&
                        r.k.stride(0) == w.k.stride(0) && r.k.stride(1) == w.k.stride(1);
    if (!same_k) {
      Backend::rope_write_kv(r, w);
      return;
    }
    const RopeLaunch rl = rope_launch(r);
    const KvArena arena = kv_write_arena(w);
    const TokenFormats formats = token_formats(w, 2);
    launch_rope_write_kv(rl.q, rl.k, rl.positions, rl.inv_freq, rl.inv_freq_row_stride, rl.half,
                         r.attention_scaling, rows_of(w.k), rows_of(w.v),
                         staged_i32(w.slot_mapping, 1), arena, formats, w.layer, stream_);
  }

  void silu_mul(const TensorView& out, const TensorView& gate_up) override {
    check_bf16(out, "silu_mul output");
    check_bf16(gate_up, "silu_mul input");
    const StridedRows o = rows_of(out), g = rows_of(gate_up);
    SIEVE_CHECK_EQ(2 * o.row_size, g.row_size);
    SIEVE_CHECK_EQ(o.num_rows(), g.num_rows());
    launch_silu_mul(o, g, stream_);
  }

  void softmax(const TensorView& x) override {
    check_device(x, "softmax input");
    SIEVE_CHECK(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16) << x.dtype();
    launch_softmax(rows_of(x), x.dtype(), stream_);
  }

  void write_kv(const KvWriteArgs& a) override {
    const KvArena arena = kv_write_arena(a);
    const TokenFormats formats = token_formats(a, 1);
    launch_write_kv(rows_of(a.k), rows_of(a.v), staged_i32(a.slot_mapping, 0), arena, formats,
                    a.layer, stream_);
  }

  // bf16 and the quantized formats, alone or mixed in a batch (kv_formats): write, attention,
  // compaction, page copies, signals and expected logits read and write them all. f32 arenas
  // serve tests against the CPU reference only: the write and attention kernels take f32
  // sequences in an f32 layout, never beside bf16 ones.
  bool supports_kv_format(kvcache::KvFormatId format) const override {
    return format != kvcache::KvFormatId::kF32;
  }
  void copy_pages(const PageCopyArgs& a) override {
    const KvArena arena = arena_of(a.arena, a.layout);
    SIEVE_CHECK_EQ(a.src_pages.numel(), a.dst_pages.numel());
    launch_copy_pages(arena, staged_i32(a.src_pages, 0), staged_i32(a.dst_pages, 1),
                      a.src_pages.numel(), stream_);
  }

  void compact_kv(const CompactArgs& a) override {
    const KvArena arena = arena_of(a.arena, a.layout);
    SIEVE_CHECK_EQ(a.keep_slots.ndim(), 3);
    SIEVE_CHECK_EQ(a.keep_slots.size(0), a.layout.num_layers);
    SIEVE_CHECK_EQ(a.keep_slots.size(1), a.layout.num_kv_heads);
    SIEVE_CHECK_EQ(a.keep_counts.numel(), a.layout.num_layers * a.layout.num_kv_heads);
    SIEVE_CHECK(a.keep_slots.is_contiguous() && a.keep_counts.is_contiguous());
    launch_compact_kv(arena, staged_i32(a.page_table, 0),
                      a.page_table.numel() * a.layout.tokens_per_page, staged_i32(a.keep_slots, 1),
                      a.keep_slots.size(2), staged_i32(a.keep_counts, 2), stream_);
  }

  void copy_rows(const CopyRowsArgs& a) override {
    check_device(a.dst, "copy_rows destination");
    check_device(a.src, "copy_rows source");
    SIEVE_CHECK(a.dst.ndim() == 2 && a.src.ndim() == 2) << "copy_rows takes 2-D views";
    SIEVE_CHECK(a.dst.stride(1) == 1 && a.src.stride(1) == 1) << "rows must be contiguous";
    SIEVE_CHECK_EQ(a.dst.size(1), a.src.size(1));
    SIEVE_CHECK(a.dst.dtype() == a.src.dtype());
    SIEVE_CHECK_EQ(a.dst_rows.numel(), a.src_rows.numel());
    const int64_t elem = static_cast<int64_t>(dtype_size(a.src.dtype()));
    launch_copy_rows(a.dst.raw(), a.dst.stride(0) * elem, a.dst.size(0), staged_i32(a.dst_rows, 0),
                     a.src.raw(), a.src.stride(0) * elem, a.src.size(0), staged_i32(a.src_rows, 1),
                     a.dst_rows.numel(), static_cast<int>(a.src.size(1) * elem), stream_);
  }

  void kv_signals(const KvSignalArgs& a) override {
    const KvArena arena = arena_of(a.arena, a.layout);
    SignalPointers p;
    p.page_table = staged_i32(a.page_table, 0);
    p.num_tokens = a.num_tokens;
    if (!a.head_lens.empty()) {
      SIEVE_CHECK_EQ(a.head_lens.numel(), int64_t{a.layout.num_layers} * a.layout.num_kv_heads);
      p.head_lens = staged_i32(a.head_lens, 1);
      p.gap_end = a.gap_end;
    }
    if (a.num_queries > 0) {
      check_device(a.queries, "kv_signals queries");
      SIEVE_CHECK(a.queries.ndim() == 4 && a.queries.stride(3) == 1 &&
                  a.queries.stride(2) == a.layout.head_dim)
          << "queries are rows of whole heads";
      SIEVE_CHECK_EQ(a.queries.size(0), a.layout.num_layers);
      SIEVE_CHECK_GE(a.queries.size(1), a.num_queries);
      SIEVE_CHECK_EQ(a.queries.size(3), a.layout.head_dim);
      p.queries = a.queries.raw();
      p.query_dtype = a.queries.dtype();
      p.query_layer_stride = a.queries.stride(0);
      p.query_row_stride = a.queries.stride(1);
      p.num_queries = a.num_queries;
      p.num_heads = static_cast<int>(a.queries.size(2));
    }
    p.scale = a.scale;
    p.slot_stride = a.slot_stride;
    auto out = [&](const TensorView& v, const char* what) -> float* {
      if (v.empty()) return nullptr;
      check_device(v, what);
      SIEVE_CHECK(v.dtype() == DType::kF32 && v.is_contiguous()) << what;
      return v.data<float>();
    };
    p.window_attention = out(a.window_attention, "window_attention");
    p.window_attention_group_max = out(a.window_attention_group_max, "window_attention_group_max");
    p.window_attention_max = out(a.window_attention_max, "window_attention_max");
    for (int i = 0; i < 2; ++i) {
      SIEVE_CHECK(a.skip_begin[i] >= 0 && a.skip_begin[i] <= a.skip_end[i])
          << "skipped slots [" << a.skip_begin[i] << ", " << a.skip_end[i] << ")";
      p.skip_begin[i] = a.skip_begin[i];
      p.skip_end[i] = a.skip_end[i];
    }
    p.key_norms = out(a.key_norms, "key_norms");
    p.value_norms = out(a.value_norms, "value_norms");
    p.key_anchor_dot = out(a.key_anchor_dot, "key_anchor_dot");
    launch_kv_signals(arena, p, stream_);
  }

  void accumulate_query_moments(const QueryMomentArgs& a) override {
    check_device(a.q, "query moments queries");
    check_device(a.moments, "query moments");
    SIEVE_CHECK(a.q.ndim() == 3 && a.q.stride(2) == 1 && a.q.stride(1) == a.q.size(2))
        << "queries are rows of whole heads: " << a.q.shape_string();
    const int64_t heads = a.q.size(1), d = a.q.size(2);
    SIEVE_CHECK(a.moments.dtype() == DType::kF32 && a.moments.is_contiguous() &&
                a.moments.numel() == heads * d * (d + 1))
        << "moments " << a.moments.shape_string();
    launch_accumulate_query_moments(a.q.raw(), a.q.dtype(), a.q.size(0), a.q.stride(0),
                                    static_cast<int>(heads), static_cast<int>(d),
                                    a.moments.data<float>(), stream_);
  }

  void expected_logits(const ExpectedLogitArgs& a) override {
    const KvArena arena = arena_of(a.arena, a.layout);
    ExpectedLogitPointers p;
    p.page_table = staged_i32(a.page_table, 0);
    p.num_tokens = a.num_tokens;
    if (!a.head_lens.empty()) {
      SIEVE_CHECK_EQ(a.head_lens.numel(), int64_t{a.layout.num_layers} * a.layout.num_kv_heads);
      p.head_lens = staged_i32(a.head_lens, 1);
      p.gap_end = a.gap_end;
    }
    const int64_t d = a.layout.head_dim;
    check_device(a.moments, "expected_logits moments");
    SIEVE_CHECK(a.moments.ndim() == 3 && a.moments.dtype() == DType::kF32 &&
                a.moments.is_contiguous() && a.moments.size(0) == a.layout.num_layers &&
                a.moments.size(2) == d * (d + 1))
        << "moments " << a.moments.shape_string();
    SIEVE_CHECK_GT(a.count, 0) << "no queries in the statistics";
    p.moments = a.moments.data<float>();
    p.num_heads = static_cast<int>(a.moments.size(1));
    SIEVE_CHECK_EQ(p.num_heads % a.layout.num_kv_heads, 0);
    p.inv_count = static_cast<float>(1.0 / static_cast<double>(a.count));
    p.rotary_half = static_cast<int>(a.rope_cos.numel());
    SIEVE_CHECK(a.rope_sin.numel() == p.rotary_half && 2 * p.rotary_half <= d &&
                a.rope_cos.device() == Device::kCpu && a.rope_sin.device() == Device::kCpu)
        << "the averaged RoPE is host f32 [rotary_dim / 2]";
    for (int i = 0; i < p.rotary_half; ++i) {
      p.cos[i] = a.rope_cos.data<float>()[i];
      p.sin[i] = a.rope_sin.data<float>()[i];
    }
    p.covariance = a.covariance;
    p.scale = a.scale;
    p.slot_stride = a.slot_stride;
    check_device(a.out, "expected_logits out");
    SIEVE_CHECK(a.out.dtype() == DType::kF32 && a.out.is_contiguous() &&
                a.out.numel() >= int64_t{a.layout.num_layers} * p.num_heads * a.slot_stride)
        << "expected_logits out " << a.out.shape_string();
    p.out = a.out.data<float>();
    launch_expected_logits(arena, p, stream_);
  }

  void attention(const AttentionArgs& a) override {
    const KvArena arena = arena_of(a.arena, a.layout);
    check_bf16(a.q, "attention q");
    check_bf16(a.out, "attention out");
    SIEVE_CHECK(a.q.ndim() == 3 && a.out.ndim() == 3);
    check_same_shape(a.q, a.out);
    SIEVE_CHECK(a.q.stride(2) == 1 && a.out.stride(2) == 1);
    SIEVE_CHECK_EQ(a.q.size(2), a.layout.head_dim);
    SIEVE_CHECK(a.layer >= 0 && a.layer < a.layout.num_layers) << "layer " << a.layer;
    const int64_t num_seqs = a.kv_lens.numel();
    SIEVE_CHECK_EQ(a.qo_indptr.numel(), num_seqs + 1);
    SIEVE_CHECK_EQ(a.kv_indptr.numel(), num_seqs + 1);
    SIEVE_CHECK_EQ(a.kv_head_lens.empty(), a.kv_gap_ends.empty())
        << "kv_head_lens and kv_gap_ends come together";
    if (!a.kv_head_lens.empty()) {
      SIEVE_CHECK_GE(a.kv_head_lens.numel(),
                     num_seqs * a.layout.num_layers * a.layout.num_kv_heads);
      SIEVE_CHECK_GE(a.kv_gap_ends.numel(), num_seqs);
    }
    if (!a.slot_bias.empty()) {
      check_device(a.slot_bias, "attention slot_bias");
      SIEVE_CHECK_EQ(a.slot_bias.dtype(), DType::kF32);
      SIEVE_CHECK_GE(a.slot_bias.numel(), int64_t{a.layout.num_layers} * a.layout.num_pages *
                                              a.layout.num_kv_heads * a.layout.tokens_per_page);
      if (!a.slot_bias_seqs.empty()) SIEVE_CHECK_EQ(a.slot_bias_seqs.numel(), num_seqs);
    }
    if (!a.selected_indptr.empty()) {
      SIEVE_CHECK_EQ(a.selected_indptr.numel(), num_seqs * a.layout.num_kv_heads + 1);
    }
    PagedAttentionParams p;
    p.q = a.q.raw();
    p.q_stride_token = a.q.stride(0);
    p.q_stride_head = a.q.stride(1);
    p.out = a.out.raw();
    p.out_stride_token = a.out.stride(0);
    p.out_stride_head = a.out.stride(1);
    p.arena = arena.data;
    p.kv_dtype = arena.dtype;
    p.kv_format = arena.format;
    p.page_bytes = arena.page_bytes;
    if (!a.kv_formats.empty()) {
      check_kv_formats(a.kv_formats, num_seqs);
      p.kv_formats = staged_i32(a.kv_formats, 9);
    }
    p.num_layers = arena.num_layers;
    p.num_kv_heads = arena.num_kv_heads;
    p.head_dim = arena.head_dim;
    p.tokens_per_page = arena.tokens_per_page;
    p.num_pages = arena.num_pages;
    p.layer = a.layer;
    p.num_heads = static_cast<int>(a.q.size(1));
    p.num_tokens = static_cast<int>(a.q.size(0));
    p.num_seqs = static_cast<int>(num_seqs);
    p.qo_indptr = staged_i32(a.qo_indptr, 0);
    p.kv_indptr = staged_i32(a.kv_indptr, 1);
    p.kv_indices = staged_i32(a.kv_indices, 2);
    p.kv_lens = staged_i32(a.kv_lens, 3);
    p.kv_head_lens = a.kv_head_lens.empty() ? nullptr : staged_i32(a.kv_head_lens, 4);
    p.kv_gap_ends = a.kv_gap_ends.empty() ? nullptr : staged_i32(a.kv_gap_ends, 5);
    p.slot_bias = a.slot_bias.empty() ? nullptr : a.slot_bias.data<float>();
    p.slot_bias_seqs = a.slot_bias_seqs.empty() ? nullptr : staged_i32(a.slot_bias_seqs, 6);
    p.selected_indptr = a.selected_indptr.empty() ? nullptr : staged_i32(a.selected_indptr, 7);
    p.selected_slots = a.selected_slots.empty() ? nullptr : staged_i32(a.selected_slots, 8);
    p.scale = a.scale;
    p.min_q_len = a.min_q_len;
    p.max_q_len = a.max_q_len;
    p.tensor_cores = tensor_cores_;
    p.reuse_plan = a.reuse_plan && !a.workspace.empty() && !p.kv_head_lens && !p.selected_indptr;
    const size_t bytes = cuda::attention_workspace_bytes(p, num_sms_);
    void* workspace = nullptr;
    if (a.workspace.empty()) {
      workspace = workspace_.ensure(bytes);
    } else {
      check_device(a.workspace, "attention workspace");
      SIEVE_CHECK_GE(a.workspace.nbytes(), bytes) << "attention workspace too small";
      workspace = a.workspace.raw();
    }
    launch_attention(p, workspace, num_sms_, stream_);
  }

  size_t attention_workspace_bytes(int max_num_seqs, int num_kv_heads,
                                   int head_dim) const override {
    PagedAttentionParams p;
    p.num_seqs = max_num_seqs;
    p.num_kv_heads = num_kv_heads;
    p.head_dim = head_dim;
    return cuda::attention_workspace_bytes(p, num_sms_);
  }

  std::optional<std::pair<size_t, size_t>> memory_info() const override {
    size_t free_bytes = 0, total_bytes = 0;
    SIEVE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return std::make_pair(free_bytes, total_bytes);
  }

  bool supports_graphs() const override { return true; }

  StatusOr<int> capture_graph(const std::function<void()>& body) override {
    // Thread-local mode: other threads may still use the runtime (a server's I/O threads do not,
    // but tests may) while this one captures.
    SIEVE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    body();
    cudaGraph_t graph = nullptr;
    SIEVE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t error = cudaGraphInstantiate(&exec, graph, 0);
    SIEVE_CUDA_CHECK(cudaGraphDestroy(graph));
    if (error != cudaSuccess) {
      cudaGetLastError();
      return InternalError(std::string("cannot instantiate a CUDA graph: ") +
                           cudaGetErrorString(error));
    }
    graphs_.push_back(exec);
    return static_cast<int>(graphs_.size()) - 1;
  }

  void replay_graph(int graph) override {
    SIEVE_CHECK(graph >= 0 && graph < static_cast<int>(graphs_.size())) << "graph " << graph;
    SIEVE_CUDA_CHECK(cudaGraphLaunch(graphs_[graph], stream_));
  }

  void sample(const SampleArgs& a) override {
    SIEVE_CHECK_EQ(a.logits.dtype(), DType::kF32);
    SIEVE_CHECK(a.logits.ndim() == 2 && a.logits.stride(1) == 1);
    const int64_t num_seqs = a.logits.size(0);
    for (const TensorView* v :
         {&a.temperature, &a.top_k, &a.top_p, &a.min_p, &a.seeds, &a.steps, &a.out_tokens}) {
      SIEVE_CHECK_EQ(v->numel(), num_seqs);
    }
    SampleParams p;
    // Logits the caller edited on the host (penalties, masks) are staged like the parameters.
    p.logits = static_cast<const float*>(staged(a.logits, DType::kF32, 7));
    p.logits_stride = a.logits.device() == Device::kCuda ? a.logits.stride(0) : a.logits.size(1);
    p.num_seqs = static_cast<int>(num_seqs);
    p.vocab = static_cast<int>(a.logits.size(1));
    p.temperature = static_cast<const float*>(staged(a.temperature, DType::kF32, 0));
    p.top_k = static_cast<const int32_t*>(staged(a.top_k, DType::kI32, 1));
    p.top_p = static_cast<const float*>(staged(a.top_p, DType::kF32, 2));
    p.min_p = static_cast<const float*>(staged(a.min_p, DType::kF32, 3));
    p.seeds = static_cast<const int64_t*>(staged(a.seeds, DType::kI64, 4));
    p.steps = static_cast<const int64_t*>(staged(a.steps, DType::kI64, 5));
    SIEVE_CHECK_EQ(a.out_tokens.dtype(), DType::kI32);
    const bool host_out = a.out_tokens.device() == Device::kCpu;
    p.out_tokens = host_out ? static_cast<int32_t*>(staging_[6].ensure(a.out_tokens.nbytes()))
                            : a.out_tokens.data<int32_t>();
    p.slice_max = static_cast<unsigned long long*>(sample_scratch_.ensure(
        static_cast<size_t>(num_seqs) * kArgmaxSlices * sizeof(unsigned long long)));
    launch_sample(p, stream_);
    if (host_out) {
      SIEVE_CUDA_CHECK(cudaMemcpyAsync(a.out_tokens.raw(), p.out_tokens, a.out_tokens.nbytes(),
                                       cudaMemcpyDeviceToHost, stream_));
      synchronize();
    }
  }

  void apply_penalties(const PenaltyArgs& a) override {
    check_device(a.logits, "penalty logits");
    SIEVE_CHECK_EQ(a.logits.dtype(), DType::kF32);
    SIEVE_CHECK(a.logits.ndim() == 2 && a.logits.stride(1) == 1) << a.logits.shape_string();
    const int64_t num_rows = a.logits.size(0);
    SIEVE_CHECK_EQ(a.token_indptr.numel(), num_rows + 1);
    SIEVE_CHECK_EQ(a.token_ids.numel(), a.output_counts.numel());
    SIEVE_CHECK_EQ(a.token_ids.numel(), a.flags.numel());
    for (const TensorView* v : {&a.repetition_penalty, &a.frequency_penalty, &a.presence_penalty}) {
      SIEVE_CHECK_EQ(v->numel(), num_rows);
    }
    PenaltyParams p;
    p.logits = a.logits.data<float>();
    p.logits_stride = a.logits.stride(0);
    p.num_rows = static_cast<int>(num_rows);
    p.vocab = static_cast<int>(a.logits.size(1));
    p.token_indptr = staged_i32(a.token_indptr, 0);
    p.token_ids = staged_i32(a.token_ids, 1);
    p.output_counts = staged_i32(a.output_counts, 2);
    p.flags = static_cast<const uint8_t*>(staged(a.flags, DType::kU8, 3));
    p.repetition_penalty = static_cast<const float*>(staged(a.repetition_penalty, DType::kF32, 4));
    p.frequency_penalty = static_cast<const float*>(staged(a.frequency_penalty, DType::kF32, 5));
    p.presence_penalty = static_cast<const float*>(staged(a.presence_penalty, DType::kF32, 6));
    launch_apply_penalties(p, stream_);
  }

 private:
  static constexpr int kStagingSlots = 10;

  // `v` on the device: itself, or its copy in staging slot `slot` when it lives on the host.
  const void* staged(const TensorView& v, DType dtype, int slot) {
    SIEVE_CHECK_EQ(v.dtype(), dtype);
    SIEVE_CHECK(v.is_contiguous());
    if (v.device() == Device::kCuda || v.numel() == 0) return v.raw();
    void* device = staging_[slot].ensure(v.nbytes());
    // From pageable memory the call returns once the source has been read: the host may reuse it.
    SIEVE_CUDA_CHECK(cudaMemcpyAsync(device, v.raw(), v.nbytes(), cudaMemcpyHostToDevice, stream_));
    return device;
  }

  // The checked launch arguments of rope (the fused rope_write_kv shares them).
  struct RopeLaunch {
    StridedRows q, k;
    const int32_t* positions;
    const float* inv_freq;
    int64_t inv_freq_row_stride;
    int half;
  };

  RopeLaunch rope_launch(const RopeArgs& a) {
    check_bf16(a.q, "rope q");
    check_bf16(a.k, "rope k");
    SIEVE_CHECK(a.q.ndim() == 3 && a.k.ndim() == 3);
    SIEVE_CHECK_EQ(a.q.size(0), a.k.size(0));
    SIEVE_CHECK_EQ(a.positions.numel(), a.q.size(0));
    check_device(a.inv_freq, "rope inv_freq");
    SIEVE_CHECK_EQ(a.inv_freq.dtype(), DType::kF32);
    SIEVE_CHECK_EQ(a.inv_freq.stride(a.inv_freq.ndim() - 1), 1);
    const int64_t half = a.inv_freq.size(a.inv_freq.ndim() - 1);
    SIEVE_CHECK_LE(2 * half, a.q.size(2));
    SIEVE_CHECK_LE(2 * half, a.k.size(2));
    int64_t row_stride = 0;
    if (a.inv_freq.ndim() == 2) {
      SIEVE_CHECK_EQ(a.inv_freq.size(0), a.q.size(0));
      row_stride = a.inv_freq.stride(0);
    }
    return RopeLaunch{
        rows_of(a.q), rows_of(a.k),          staged_i32(a.positions, 0), a.inv_freq.data<float>(),
        row_stride,   static_cast<int>(half)};
  }

  // The checked arena of write_kv (the fused rope_write_kv shares it).
  KvArena kv_write_arena(const KvWriteArgs& a) {
    const KvArena arena = arena_of(a.arena, a.layout);
    check_bf16(a.k, "write_kv k");
    check_bf16(a.v, "write_kv v");
    SIEVE_CHECK(a.k.ndim() == 3 && a.v.ndim() == 3);
    check_same_shape(a.k, a.v);
    SIEVE_CHECK_EQ(a.k.size(1), a.layout.num_kv_heads);
    SIEVE_CHECK_EQ(a.k.size(2), a.layout.head_dim);
    SIEVE_CHECK_EQ(a.slot_mapping.numel(), a.k.size(0));
    SIEVE_CHECK(a.layer >= 0 && a.layer < a.layout.num_layers) << "layer " << a.layer;
    return arena;
  }

  // Each token's format for write_kv (staging slots `slot` and `slot` + 1).
  TokenFormats token_formats(const KvWriteArgs& a, int slot) {
    SIEVE_CHECK_EQ(a.kv_formats.empty(), a.qo_indptr.empty()) << "kv_formats come with qo_indptr";
    TokenFormats f;
    if (a.kv_formats.empty()) return f;
    f.num_seqs = static_cast<int>(a.kv_formats.numel());
    SIEVE_CHECK_GT(f.num_seqs, 0);
    check_kv_formats(a.kv_formats, f.num_seqs);
    SIEVE_CHECK_EQ(a.qo_indptr.numel(), f.num_seqs + 1);
    f.formats = staged_i32(a.kv_formats, slot);
    f.qo_indptr = staged_i32(a.qo_indptr, slot + 1);
    return f;
  }

  const int32_t* staged_i32(const TensorView& v, int slot) {
    return static_cast<const int32_t*>(staged(v, DType::kI32, slot));
  }

  int device_;
  std::string name_;
  int num_sms_;
  bool tensor_cores_;
  cudaStream_t stream_;
  std::unique_ptr<CublasGemm> gemm_;
  GrowingBuffer workspace_;
  std::array<GrowingBuffer, kStagingSlots> staging_;
  GrowingBuffer sample_scratch_;
  std::vector<cudaGraphExec_t> graphs_;
};

}  // namespace

StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device) {
  const int count = device_count();
  if (device < 0 || device >= count) {
    return FailedPreconditionError("CUDA device " + std::to_string(device) + " does not exist (" +
                                   std::to_string(count) + " visible)");
  }
  if (cudaSetDevice(device) != cudaSuccess) {
    const std::string error = cudaGetErrorString(cudaGetLastError());
    return FailedPreconditionError("cannot use CUDA device " + std::to_string(device) + ": " +
                                   error);
  }
  cudaDeviceProp prop{};
  SIEVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (const std::string error = kernel_image_error(); !error.empty()) {
    return FailedPreconditionError(std::string("this build has no kernels for ") + prop.name +
                                   " (sm_" + std::to_string(prop.major) +
                                   std::to_string(prop.minor) + "): " + error +
                                   "; rebuild with -DSIEVE_CUDA_ARCHS=<its architecture>");
  }
  cudaStream_t stream = nullptr;
  SIEVE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto gemm = CublasGemm::create(stream);
  if (!gemm.ok()) {
    cudaStreamDestroy(stream);
    return gemm.status();
  }
  std::string name = "cuda:" + std::to_string(device) + " (" + prop.name + ", " +
                     std::to_string(prop.multiProcessorCount) + " SMs, bf16)";
  return std::unique_ptr<Backend>(new CudaBackend(device, std::move(name), prop.multiProcessorCount,
                                                  prop.major >= 8, stream, *std::move(gemm)));
}

}  // namespace sieve::kernels::cuda
