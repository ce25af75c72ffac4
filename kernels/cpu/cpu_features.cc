#include "kernels/cpu/cpu_features.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/check.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sieve::kernels::cpu {
namespace {

#if defined(__x86_64__)
struct Regs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf) {
  Regs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return Regs{};
  return r;
}

// XCR0: the register states the OS saves and restores (read only when OSXSAVE says we may).
uint64_t xgetbv0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool bit(unsigned reg, int b) { return ((reg >> b) & 1u) != 0; }

// Linux hands out AMX tile state only to processes that ask (arch_prctl ARCH_REQ_XCOMP_PERM).
bool request_amx_permission() {
#if defined(__linux__)
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  const Regs v = cpuid(0, 0);
  char vendor[13] = {};
  std::memcpy(vendor, &v.ebx, 4);
  std::memcpy(vendor + 4, &v.edx, 4);
  std::memcpy(vendor + 8, &v.ecx, 4);
  f.vendor = vendor;
  const unsigned max_leaf = v.eax;
  const Regs l1 = cpuid(1, 0);
  if (!bit(l1.ecx, 27)) return f;  // no OSXSAVE: the OS may save no AVX state at all
  const uint64_t xcr0 = xgetbv0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;              // SSE + AVX state
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_tiles = (xcr0 & 0x60000) == 0x60000;    // XTILECFG + XTILEDATA
  if (max_leaf < 7) return f;
  const Regs l7 = cpuid(7, 0);
  const Regs l7s1 = cpuid(7, 1);
  const bool fma = bit(l1.ecx, 12), f16c = bit(l1.ecx, 29), avx = bit(l1.ecx, 28);
  f.avx2 = os_ymm && avx && fma && f16c && bit(l7.ebx, 5);
  f.avx512 =
      f.avx2 && os_zmm && bit(l7.ebx, 16) && bit(l7.ebx, 17) && bit(l7.ebx, 30) && bit(l7.ebx, 31);
  f.avx512_vnni = f.avx512 && bit(l7.ecx, 11);
  f.avx512_bf16 = f.avx512 && bit(l7s1.eax, 5);
  f.amx_bf16 = os_tiles && bit(l7.edx, 24) && bit(l7.edx, 22);
  f.amx_int8 = os_tiles && bit(l7.edx, 24) && bit(l7.edx, 25);
  f.amx_permitted = (f.amx_bf16 || f.amx_int8) && request_amx_permission();
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

// The cgroup's CPU quota in CPUs (rounded up), or 0 when none is set. cgroup v2 first (cpu.max:
// "max 100000" or "<quota> <period>"), then v1 (cpu.cfs_quota_us / cpu.cfs_period_us).
int cgroup_cpu_quota() {
  std::ifstream cgroups("/proc/self/cgroup");
  std::string line;
  while (std::getline(cgroups, line)) {
    // "hierarchy-id:controllers:path"
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    double quota = -1, period = 0;
    if (controllers.empty()) {
      std::ifstream max("/sys/fs/cgroup" + path + "/cpu.max");
      std::string q;
      if (max >> q >> period && q != "max") quota = std::atof(q.c_str());
    } else if (controllers.find("cpu") != std::string::npos) {
      for (const std::string root : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"}) {
        std::ifstream q(root + path + "/cpu.cfs_quota_us"), p(root + path + "/cpu.cfs_period_us");
        if (q >> quota && p >> period) break;
        quota = -1;
      }
    }
    if (quota > 0 && period > 0) return std::max(1, static_cast<int>(std::ceil(quota / period)));
  }
  return 0;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

const char* kernel_level_name(KernelLevel level) {
  switch (level) {
    case KernelLevel::kScalar:
      return "scalar";
    case KernelLevel::kAvx2:
      return "avx2";
    case KernelLevel::kAvx512:
      return "avx512";
    case KernelLevel::kAvx512Vnni:
      return "avx512vnni";
  }
  return "?";
}

StatusOr<KernelLevel> parse_kernel_level(const std::string& name) {
  for (const KernelLevel level :
       {KernelLevel::kScalar, KernelLevel::kAvx2, KernelLevel::kAvx512, KernelLevel::kAvx512Vnni}) {
    if (name == kernel_level_name(level)) return level;
  }
  return InvalidArgumentError("SIEVE_CPU_KERNELS='" + name +
                              "' is not one of scalar, avx2, avx512, avx512vnni");
}

KernelLevel best_kernel_level(const CpuFeatures& f) {
  if (f.avx512_vnni) return KernelLevel::kAvx512Vnni;
  if (f.avx512) return KernelLevel::kAvx512;
  if (f.avx2) return KernelLevel::kAvx2;
  return KernelLevel::kScalar;
}

StatusOr<KernelLevel> selected_kernel_level() {
  const KernelLevel best = best_kernel_level(cpu_features());
  const char* env = std::getenv("SIEVE_CPU_KERNELS");
  if (env == nullptr || *env == '\0') return best;
  ASSIGN_OR_RETURN(const KernelLevel asked, parse_kernel_level(env));
  if (asked > best) {
    return FailedPreconditionError(std::string("SIEVE_CPU_KERNELS=") + env +
                                   ": this CPU runs at most " + kernel_level_name(best));
  }
  return asked;
}

KernelLevel kernel_level() {
  static const KernelLevel level = [] {
    const StatusOr<KernelLevel> selected = selected_kernel_level();
    SIEVE_CHECK(selected.ok()) << selected.status().message();
    return *selected;
  }();
  return level;
}

int cpu_thread_budget() {
  int cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus <= 0) cpus = omp_get_num_procs();
  const int quota = cgroup_cpu_quota();
  return std::max(1, quota > 0 ? std::min(cpus, quota) : cpus);
}

std::string openblas_coretype_for(const CpuFeatures& f) {
  if (f.avx512_bf16) return "Cooperlake";  // SkylakeX's AVX-512 kernels plus BF16 ones
  if (f.avx512) return "SkylakeX";
  if (f.avx2) return "Haswell";
  return "";
}

std::string describe_cpu_kernels() {
  const CpuFeatures& f = cpu_features();
  std::ostringstream out;
  const StatusOr<KernelLevel> level = selected_kernel_level();
  out << f.vendor << " cpu: avx2=" << f.avx2 << " avx512=" << f.avx512 << " vnni=" << f.avx512_vnni
      << " bf16=" << f.avx512_bf16
      << " amx=" << (f.amx_int8 ? (f.amx_permitted ? "granted" : "denied") : "no")
      << "; quantized kernels "
      << (level.ok() ? kernel_level_name(*level) : std::string(level.status().message())) << ", "
      << omp_get_max_threads() << " threads (budget " << cpu_thread_budget() << "), openblas core "
      << openblas_get_corename() << " with " << openblas_get_num_threads() << " threads";
  return out.str();
}

}  // namespace sieve::kernels::cpu
