// The quantized-GEMM kernels at level "avx512vnni" (quant_kernels.inc; flags in
// kernels/CMakeLists.txt).
#define SIEVE_QK_NS qk_avx512vnni
#define SIEVE_QK_LEVEL 3
#include "kernels/cpu/quant_kernels.inc"
