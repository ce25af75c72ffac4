#pragma once
// splitmix64: a fast, well-mixed 64-bit hash, the source of every counter-based random draw
// (sampling, random weights) and of per-sample seeds. The CUDA kernels carry a device copy of the
// same function.

#include <cstdint>

namespace sieve {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace sieve
