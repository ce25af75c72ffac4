#pragma once
// The CPU backend: fp32, exact, multithreaded over all cores (OpenMP; BLAS for GEMMs).

#include <memory>

#include "kernels/backend.h"

namespace sieve::kernels::cpu {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace sieve::kernels::cpu
