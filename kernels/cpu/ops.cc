#include "kernels/cpu/ops.h"

#include <cblas.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/quant_gemm.h"
#include "kernels/cpu/rows.h"

namespace sieve::kernels::cpu {
namespace {

// Row kernels: the math of each op for one row, shared by the serial ref:: loop and the parallel
// production loop.

void embed_row(const TensorView& ids, const TensorView& table, const TensorView& out, int64_t r) {
  const int32_t id = ids.data<int32_t>()[r];
  SIEVE_CHECK(id >= 0 && id < table.size(0)) << "token id " << id << " of " << table.size(0);
  if (is_block_dtype(table.dtype())) return dequantize_row(table, id, row_ptr<float>(out, r));
  std::memcpy(row_ptr<float>(out, r), row_ptr<float>(table, id), row_size(out) * sizeof(float));
}

// A table may be f32 or, on the production path, a block format (a GGUF's embedding).
void check_table(const TensorView& table) {
  if (!is_block_dtype(table.dtype())) check_rows(table);
}

void rms_norm_row(float* out, const float* x, const float* w, int64_t n, float eps) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

void add_rms_norm_row(float* out, float* residual, const float* x, const float* w, int64_t n,
                      float eps) {
  for (int64_t i = 0; i < n; ++i) residual[i] += x[i];
  rms_norm_row(out, residual, w, n, eps);
}

// Rotate-half RoPE of one head vector at `position`:
//   x'[i] = x[i] cos θ_i - x[i + d/2] sin θ_i,  x'[i + d/2] = x[i + d/2] cos θ_i + x[i] sin θ_i
// with θ_i = position * inv_freq[i]; dimensions past the rotary ones are left alone.
void rope_head(float* x, const float* inv_freq, int64_t half, float position, float scaling) {
  for (int64_t i = 0; i < half; ++i) {
    const float theta = position * inv_freq[i];
    const float c = std::cos(theta) * scaling;
    const float s = std::sin(theta) * scaling;
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

void rope_token(const RopeArgs& args, int64_t t) {
  const int64_t half = args.inv_freq.size(args.inv_freq.ndim() - 1);
  const float* inv_freq =
      args.inv_freq.ndim() == 2 ? row_ptr<float>(args.inv_freq, t) : args.inv_freq.data<float>();
  const float position = static_cast<float>(args.positions.data<int32_t>()[t]);
  for (int64_t h = 0; h < args.q.size(1); ++h) {
    rope_head(row_ptr<float>(args.q, t * args.q.size(1) + h), inv_freq, half, position,
              args.attention_scaling);
  }
  for (int64_t h = 0; h < args.k.size(1); ++h) {
    rope_head(row_ptr<float>(args.k, t * args.k.size(1) + h), inv_freq, half, position,
              args.attention_scaling);
  }
}

void silu_mul_row(float* out, const float* gate_up, int64_t f) {
  for (int64_t i = 0; i < f; ++i) {
    const float g = gate_up[i];
    out[i] = g / (1.0f + std::exp(-g)) * gate_up[f + i];
  }
}

void softmax_row(float* x, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void check_rope(const RopeArgs& args) {
  check_rows(args.q);
  check_rows(args.k);
  SIEVE_CHECK_EQ(args.q.ndim(), 3);
  SIEVE_CHECK_EQ(args.k.ndim(), 3);
  SIEVE_CHECK_EQ(args.q.size(0), args.k.size(0));
  SIEVE_CHECK_EQ(args.positions.dtype(), DType::kI32);
  SIEVE_CHECK_LE(2 * args.inv_freq.size(args.inv_freq.ndim() - 1), args.q.size(2));
}

void check_gemm(const GemmArgs& a) {
  check_rows(a.x);
  check_rows(a.w);
  check_rows(a.y);
  SIEVE_CHECK(a.x.ndim() == 2 && a.w.ndim() == 2 && a.y.ndim() == 2);
  SIEVE_CHECK_EQ(a.x.size(1), a.w.size(1));
  SIEVE_CHECK_EQ(a.y.size(0), a.x.size(0));
  SIEVE_CHECK_EQ(a.y.size(1), a.w.size(0));
  SIEVE_CHECK(a.bias.empty() || a.bias.numel() == a.w.size(0));
}

// Below this many elements an op runs on one thread: a parallel region's fork and barrier cost
// more than the work (a decode step's norms and rotations are a few thousand elements).
constexpr int64_t kParallelMinElements = 1 << 15;

bool worth_parallel(const TensorView& v) { return v.numel() >= kParallelMinElements; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// ref:: the scalar specification.

namespace ref {

void embed(const TensorView& ids, const TensorView& table, const TensorView& out) {
  check_rows(table);
  check_rows(out);
  for (int64_t r = 0; r < ids.numel(); ++r) embed_row(ids, table, out, r);
}

void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, float eps) {
  check_rows(out);
  check_rows(x);
  for (int64_t r = 0; r < num_rows(x); ++r) {
    rms_norm_row(row_ptr<float>(out, r), row_ptr<float>(x, r), weight.data<float>(), row_size(x),
                 eps);
  }
}

void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                  const TensorView& weight, float eps) {
  for (int64_t r = 0; r < num_rows(x); ++r) {
    add_rms_norm_row(row_ptr<float>(out, r), row_ptr<float>(residual, r), row_ptr<float>(x, r),
                     weight.data<float>(), row_size(x), eps);
  }
}

void gemm(const GemmArgs& a) {
  check_gemm(a);
  const int64_t m = a.x.size(0), n = a.w.size(0), k = a.x.size(1);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = a.bias.empty() ? 0.0 : a.bias.data<float>()[j];
      const float* x = row_ptr<float>(a.x, i);
      const float* w = row_ptr<float>(a.w, j);
      for (int64_t p = 0; p < k; ++p) sum += static_cast<double>(x[p]) * w[p];
      row_ptr<float>(a.y, i)[j] = static_cast<float>(sum);
    }
  }
}

void rope(const RopeArgs& args) {
  check_rope(args);
  for (int64_t t = 0; t < args.q.size(0); ++t) rope_token(args, t);
}

void silu_mul(const TensorView& out, const TensorView& gate_up) {
  SIEVE_CHECK_EQ(2 * row_size(out), row_size(gate_up));
  for (int64_t r = 0; r < num_rows(out); ++r) {
    silu_mul_row(row_ptr<float>(out, r), row_ptr<float>(gate_up, r), row_size(out));
  }
}

void softmax(const TensorView& x) {
  check_rows(x);
  for (int64_t r = 0; r < num_rows(x); ++r) softmax_row(row_ptr<float>(x, r), row_size(x));
}

}  // namespace ref

// ---------------------------------------------------------------------------------------------
// The production CPU path.

void embed(const TensorView& ids, const TensorView& table, const TensorView& out) {
  check_table(table);
  check_rows(out);
  SIEVE_CHECK_EQ(row_size(table), row_size(out));
#pragma omp parallel for schedule(static) if (worth_parallel(out))
  for (int64_t r = 0; r < ids.numel(); ++r) embed_row(ids, table, out, r);
}

void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight, float eps) {
  check_rows(out);
  check_rows(x);
  SIEVE_CHECK_EQ(weight.numel(), row_size(x));
#pragma omp parallel for schedule(static) if (worth_parallel(x))
  for (int64_t r = 0; r < num_rows(x); ++r) {
    rms_norm_row(row_ptr<float>(out, r), row_ptr<float>(x, r), weight.data<float>(), row_size(x),
                 eps);
  }
}

void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                  const TensorView& weight, float eps) {
  check_rows(out);
  check_rows(residual);
  check_rows(x);
  SIEVE_CHECK_EQ(weight.numel(), row_size(x));
#pragma omp parallel for schedule(static) if (worth_parallel(x))
  for (int64_t r = 0; r < num_rows(x); ++r) {
    add_rms_norm_row(row_ptr<float>(out, r), row_ptr<float>(residual, r), row_ptr<float>(x, r),
                     weight.data<float>(), row_size(x), eps);
  }
}

void gemm(const GemmArgs& a) {
  if (is_block_dtype(a.w.dtype())) return quant_gemm(a, kernel_level());
  check_gemm(a);
  const int m = static_cast<int>(a.x.size(0));
  const int n = static_cast<int>(a.w.size(0));
  const int k = static_cast<int>(a.x.size(1));
  float beta = 0.0f;
  if (!a.bias.empty()) {
    for (int i = 0; i < m; ++i) {
      std::memcpy(row_ptr<float>(a.y, i), a.bias.data<float>(), n * sizeof(float));
    }
    beta = 1.0f;
  }
  if (m == 1) {
    // One row (a decode step): a matrix-vector product reads each weight once, where sgemm
    // would first pack (copy) the whole weight matrix — 60% of decode time, measured.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, a.w.data<float>(),
                static_cast<int>(a.w.stride(0)), a.x.data<float>(), 1, beta, a.y.data<float>(), 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.x.data<float>(),
              static_cast<int>(a.x.stride(0)), a.w.data<float>(), static_cast<int>(a.w.stride(0)),
              beta, a.y.data<float>(), static_cast<int>(a.y.stride(0)));
}

void rope(const RopeArgs& args) {
  check_rope(args);
#pragma omp parallel for schedule(static) if (worth_parallel(args.q))
  for (int64_t t = 0; t < args.q.size(0); ++t) rope_token(args, t);
}

void silu_mul(const TensorView& out, const TensorView& gate_up) {
  check_rows(out);
  check_rows(gate_up);
  SIEVE_CHECK_EQ(2 * row_size(out), row_size(gate_up));
#pragma omp parallel for schedule(static) if (worth_parallel(out))
  for (int64_t r = 0; r < num_rows(out); ++r) {
    silu_mul_row(row_ptr<float>(out, r), row_ptr<float>(gate_up, r), row_size(out));
  }
}

void softmax(const TensorView& x) {
  check_rows(x);
#pragma omp parallel for schedule(static) if (worth_parallel(x))
  for (int64_t r = 0; r < num_rows(x); ++r) softmax_row(row_ptr<float>(x, r), row_size(x));
}

}  // namespace sieve::kernels::cpu
