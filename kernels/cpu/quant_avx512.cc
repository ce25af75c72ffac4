// The quantized-GEMM kernels at level "avx512" (quant_kernels.inc; flags in
// kernels/CMakeLists.txt).
#define SIEVE_QK_NS qk_avx512
#define SIEVE_QK_LEVEL 2
#include "kernels/cpu/quant_kernels.inc"
