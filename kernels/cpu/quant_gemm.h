#pragma once
// GEMM with weights kept in their GGUF block formats (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K):
//   y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]),  x and y f32, w a block dtype (core/dtype.h).
//
// Why by hand: no library in Debian multiplies ggml's block formats; BLAS and oneDNN take f32,
// bf16 or plain int8 matrices, and converting to any of them reads more bytes than the blocks.
//
// How (llama.cpp's scheme, written from its description): each row of x is quantized once to
// int8 in blocks of 32 with one f32 scale (d = max|x| / 127), so the inner products are integer
// (vpmaddubsw on AVX2, vpdpbusd on AVX-512 VNNI) and f32 only per 16 elements. A weight row is
// first unpacked into a uniform form, one u8 (or s8, Q8_0) per element plus a scale and an offset
// per 16 elements (w = scale * q + offset), and then meets every row of x: the unpacking costs
// once per weight row however many rows x has. The offsets meet the activation blocks' sums.
//
// Q8_0 weights are the exception: they meet x in f32 (each weight row converted once, then f32
// dot products; the same bytes read). With 8-bit weights, rounding x to 8 bits too is the larger
// error, and Q8_0 is what a GGUF's LM head usually is (SmolLM2's tied embedding): there int8
// activations flipped the default model's first answer token (measured: "What is the capital of
// France?" answered "L'Étoile..." instead of "The capital of France is Paris.").
//
// Error: against the f32 product of the dequantized weights with x, only the rounding of x to
// int8 counts (the integer sums are exact), so |y - y_ref| <= Σ_blocks (max|x_block| / 254) ·
// Σ_block |w| plus f32 rounding; quant_gemm_test.cc holds every format and level to that bound.

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"

namespace sieve::kernels::cpu {

// Kernels of one level. Rows of k elements; k a multiple of the weight format's block size.
struct QuantKernels {
  // x -> q (int8 [k]), d (f32 [k / 32]: the scale of each block of 32) and dsum (f32 [k / 16]:
  // d times the sum of q over each 16).
  void (*quantize_row)(const float* x, int64_t k, int8_t* q, float* d, float* dsum);
  // One weight row of `dtype` -> q ([k]: u8, s8 for Q8_0), scale and offset (f32 [k / 16]).
  void (*unpack_row)(DType dtype, const uint8_t* src, int64_t k, uint8_t* q, float* scale,
                     float* offset);
  // An unpacked row back to f32 (the dequantized BLAS path).
  void (*to_f32)(bool signed_weights, const uint8_t* q, const float* scale, const float* offset,
                 int64_t k, float* out);
  // Σ w·x of two f32 rows (Q8_0 weights, converted a row at a time).
  float (*dot_f32)(const float* w, const float* x, int64_t k);
  // out[r] = Σ w·x of an unpacked weight row and quantized activation row r, for r < rows (at
  // most 4; row r's q, d and dsum start r * k, r * k / 32 and r * k / 16 further on).
  void (*dot)(bool signed_weights, const uint8_t* wq, const float* wscale, const float* woffset,
              const int8_t* xq, const float* xd, const float* xdsum, int64_t k, int rows,
              float* out);
  // Σ w·x straight from a row of Q4_0 or Q4_1 blocks (no unpacking: for the few rows of x of a
  // decode step); nullptr at the scalar level, which always unpacks.
  float (*dot_blocks)(DType dtype, const uint8_t* w, const int8_t* xq, const float* xd,
                      const float* xdsum, int64_t k);
};

// The kernels of `level` (which the CPU must be able to run).
const QuantKernels& quant_kernels(KernelLevel level);

// The production GEMM for a block-dtype w: OpenMP over the rows of w, kernels of `level`.
void quant_gemm(const GemmArgs& args, KernelLevel level);

// Row `row` of a block-dtype matrix as f32 (`out` holds its k elements): the CPU embedding of a
// quantized table.
void dequantize_row(const TensorView& w, int64_t row, float* out);

}  // namespace sieve::kernels::cpu
