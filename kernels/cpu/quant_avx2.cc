// The quantized-GEMM kernels at level "avx2" (quant_kernels.inc; flags in kernels/CMakeLists.txt).
#define SIEVE_QK_NS qk_avx2
#define SIEVE_QK_LEVEL 1
#include "kernels/cpu/quant_kernels.inc"
