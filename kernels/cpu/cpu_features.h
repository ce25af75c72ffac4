#pragma once
// What the CPU we run on can do, asked once at run time (cpuid, and xgetbv for what the OS saves
// on a context switch), and which kernel level the CPU backend uses. The project is never
// compiled for one CPU: the kernels of each level live in their own files, compiled with that
// level's -m flags, and are reached through function pointers chosen here (quant_gemm.h).

#include <string>

#include "core/status.h"

namespace sieve::kernels::cpu {

struct CpuFeatures {
  std::string vendor;   // "GenuineIntel", "AuthenticAMD", ...
  bool avx2 = false;    // with FMA and F16C, and the OS saving YMM state
  bool avx512 = false;  // F + BW + VL (+ DQ), and the OS saving ZMM and opmask state
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool amx_int8 = false;  // AMX tiles present (cpuid) and ...
  bool amx_bf16 = false;
  bool amx_permitted = false;  // ... granted by the OS (Linux: arch_prctl XTILEDATA)
};

// Asks the CPU (and, for AMX, the kernel) once; the same answer afterwards.
const CpuFeatures& cpu_features();

// Kernel levels, each including the ones below it.
enum class KernelLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Vnni = 3 };

const char* kernel_level_name(KernelLevel level);
// "scalar", "avx2", "avx512", "avx512vnni".
StatusOr<KernelLevel> parse_kernel_level(const std::string& name);
// The highest level `features` can run.
KernelLevel best_kernel_level(const CpuFeatures& features);

// The level the backend uses: the best the CPU can run, or lower when SIEVE_CPU_KERNELS asks
// (so CI covers every path the machine can run). An unknown name is an error; a level the CPU
// cannot run is an error too (silently running another path would defeat the variable).
StatusOr<KernelLevel> selected_kernel_level();
// selected_kernel_level(), asked once; the backend factory has reported an error already.
KernelLevel kernel_level();

// The threads this process may use: the CPUs in its affinity mask, capped by the cgroup's CPU
// quota (cpu.max, rounded up) where one is set.
int cpu_thread_budget();

// The OpenBLAS core type that matches `features` (for OPENBLAS_CORETYPE, which OpenBLAS reads
// before main): Debian's 0.3.21 does not recognise recent CPUs and falls back to SSE3 kernels.
// Empty when our detection has nothing better to say than OpenBLAS's own.
std::string openblas_coretype_for(const CpuFeatures& features);

// One line for the startup log: the CPU's features, the kernel level, threads, BLAS core.
std::string describe_cpu_kernels();

}  // namespace sieve::kernels::cpu
