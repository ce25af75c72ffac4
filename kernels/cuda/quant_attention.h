#pragma once
// Plain C++ (no CUDA types): which kernel decode attention over the quantized KV formats runs.

namespace sieve::kernels::cuda {

// "register dequant ..." (attention_quant_kernel.cuh: raw tiles by cp.async, dequantized in
// registers), or "legacy ..." (the f32-tile KvQuant instances) when the environment holds
// SIEVE_QUANT_ATTENTION=legacy, read once: benchmarks print it beside their figures.
const char* quant_decode_attention_path();

}  // namespace sieve::kernels::cuda
