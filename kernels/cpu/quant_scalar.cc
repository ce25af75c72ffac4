// The quantized-GEMM kernels at level "scalar" (quant_kernels.inc; flags in
// kernels/CMakeLists.txt).
#define SIEVE_QK_NS qk_scalar
#define SIEVE_QK_LEVEL 0
#include "kernels/cpu/quant_kernels.inc"
