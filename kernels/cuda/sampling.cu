// Sampling: one block per sequence. The candidates are ordered as the CPU reference orders them
// (logit descending, ties by token id) through a 64-bit key, key = order(logit) << 32 | ~id, so
// every filter keeps a prefix of that order and one key is one token. Each cut is a radix select
// over the keys, 8 bits a pass from the top: a pass builds a 256-bin histogram of weights (counts
// for top-k, probabilities for top-p and the draw) of the candidates that share the bits chosen
// so far, and picks the bin in which the running weight, in descending order, reaches the target.
// Eight passes over the row give the exact element; no sort, no scratch memory. The row's top key
// (the greedy token, and the reference of the probabilities) is found first by kArgmaxSlices
// blocks a row, so a greedy step does not wait for one block to read a 128k-entry row.
//
//   top-k: the k-th key by count;     top-p: the key where Σ p reaches top_p · Z over the top-k;
//   min-p: p_i >= min_p · p_max;      draw:  the key where Σ p over the survivors passes u · mass.
// with p_i = exp((logit_i - logit_max) / temperature) and u the CPU backend's counter-based draw.

#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sampling.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kBins = 256;

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Order-preserving map of a float to unsigned (larger float, larger key).
__device__ __forceinline__ uint32_t ordered(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint64_t make_key(float logit, int id) {
  return (static_cast<uint64_t>(ordered(logit)) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}

__device__ __forceinline__ int key_id(uint64_t key) {
  return static_cast<int>(0xffffffffu - static_cast<uint32_t>(key & 0xffffffffu));
}

struct Shared {
  double hist[kBins];
  double reduce[kThreads / 32];
  unsigned long long reduce_key[kThreads / 32];
  uint64_t prefix;
  double above;
};

__device__ double block_sum_double(double x, Shared& sh) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  if (threadIdx.x % 32 == 0) sh.reduce[threadIdx.x / 32] = x;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += sh.reduce[w];
  __syncthreads();
  return total;
}

__device__ uint64_t block_max_key(uint64_t x, Shared& sh) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const uint64_t other = __shfl_xor_sync(0xffffffffu, x, offset);
    x = other > x ? other : x;
  }
  if (threadIdx.x % 32 == 0) sh.reduce_key[threadIdx.x / 32] = x;
  __syncthreads();
  uint64_t best = 0;
  for (int w = 0; w < kThreads / 32; ++w) best = sh.reduce_key[w] > best ? sh.reduce_key[w] : best;
  __syncthreads();
  return best;
}

// The row's candidates and their weights: keys >= floor, probability >= min_prob (the top key
// always stays), weight 1 (counting) or the unnormalized probability.
struct Candidates {
  const float* logits;
  int vocab;
  float max_logit;
  float inv_temperature;
  uint64_t floor;
  uint64_t top;
  float min_prob;
  bool count;

  __device__ float prob(float logit) const {
    return expf((logit - max_logit) * inv_temperature);
  }
  // Weight of token i, or a negative value when i is not a candidate.
  __device__ double weight(int i, uint64_t& key) const {
    const float logit = logits[i];
    key = make_key(logit, i);
    if (key < floor) return -1.0;
    const float p = prob(logit);
    if (p < min_prob && key != top) return -1.0;
    return count ? 1.0 : static_cast<double>(p);
  }
};

// Radix select: the key at which the weight accumulated in descending key order first reaches
// `target` (falls back to the last candidate when rounding leaves the target out of reach).
__device__ uint64_t select_key(const Candidates& c, double target, Shared& sh) {
  if (threadIdx.x == 0) {
    sh.prefix = 0;
    sh.above = 0;
  }
  uint64_t mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < kBins; b += kThreads) sh.hist[b] = 0;
    __syncthreads();
    const uint64_t prefix = sh.prefix;
    int run_bin = -1;
    double run = 0;
    for (int i = threadIdx.x; i < c.vocab; i += kThreads) {
      uint64_t key;
      const double w = c.weight(i, key);
      if (w < 0 || (key & mask) != prefix) continue;
      const int bin = static_cast<int>((key >> shift) & 0xff);
      if (bin != run_bin) {  // most candidates share a bin in the early passes: add runs
        if (run_bin >= 0) atomicAdd(&sh.hist[run_bin], run);
        run_bin = bin;
        run = 0;
      }
      run += w;
    }
    if (run_bin >= 0) atomicAdd(&sh.hist[run_bin], run);
    __syncthreads();
    if (threadIdx.x == 0) {
      double running = sh.above;
      int chosen = -1, last = -1;
      double last_above = running;
      for (int b = kBins - 1; b >= 0; --b) {
        const double h = sh.hist[b];
        if (h <= 0) continue;
        if (running + h >= target) {
          chosen = b;
          break;
        }
        last = b;
        last_above = running;
        running += h;
      }
      if (chosen < 0) {
        chosen = last;
        running = last_above;
      }
      sh.above = running;
      sh.prefix = prefix | (static_cast<uint64_t>(chosen < 0 ? 0 : chosen) << shift);
    }
    mask |= 0xffull << shift;
    __syncthreads();
  }
  return sh.prefix;
}

// The top key of each slice of each row: grid (row, slice).
__global__ void __launch_bounds__(kThreads) slice_max_kernel(SampleParams p) {
  __shared__ Shared sh;
  const int s = blockIdx.x;
  const float* logits = p.logits + s * p.logits_stride;
  const int per_slice = (p.vocab + kArgmaxSlices - 1) / kArgmaxSlices;
  const int begin = blockIdx.y * per_slice, end = min(p.vocab, begin + per_slice);
  uint64_t best = 0;
  for (int i = begin + threadIdx.x; i < end; i += kThreads) {
    const uint64_t key = make_key(logits[i], i);
    best = key > best ? key : best;
  }
  best = block_max_key(best, sh);
  if (threadIdx.x == 0) p.slice_max[s * kArgmaxSlices + blockIdx.y] = best;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleParams p) {
  __shared__ Shared sh;
  const int s = blockIdx.x;
  const float* logits = p.logits + s * p.logits_stride;
  const uint64_t top = block_max_key(
      threadIdx.x < kArgmaxSlices ? p.slice_max[s * kArgmaxSlices + threadIdx.x] : 0, sh);
  const float temperature = p.temperature[s];
  if (temperature <= 0.0f) {
    if (threadIdx.x == 0) p.out_tokens[s] = key_id(top);
    return;
  }
  Candidates c{logits, p.vocab, logits[key_id(top)], 1.0f / temperature, 0, top, 0.0f, true};
  const int top_k = p.top_k[s];
  if (top_k > 0 && top_k < p.vocab) c.floor = select_key(c, top_k, sh);
  c.count = false;
  auto mass = [&]() {
    double sum = 0;
    for (int i = threadIdx.x; i < p.vocab; i += kThreads) {
      uint64_t key;
      const double w = c.weight(i, key);
      if (w > 0) sum += w;
    }
    return block_sum_double(sum, sh);
  };
  const float top_p = p.top_p[s];
  if (top_p < 1.0f) c.floor = select_key(c, static_cast<double>(top_p) * mass(), sh);
  c.min_prob = p.min_p[s];
  const double u =
      static_cast<double>(splitmix64(splitmix64(static_cast<uint64_t>(p.seeds[s])) ^
                                     static_cast<uint64_t>(p.steps[s])) >>
                          11) *
      0x1.0p-53;
  const uint64_t chosen = select_key(c, u * mass(), sh);
  if (threadIdx.x == 0) p.out_tokens[s] = key_id(chosen);
}

}  // namespace

void launch_sample(const SampleParams& params, cudaStream_t stream) {
  if (params.num_seqs == 0) return;
  static_assert(kArgmaxSlices <= kThreads);
  slice_max_kernel<<<dim3(static_cast<unsigned>(params.num_seqs), kArgmaxSlices), kThreads, 0,
                     stream>>>(params);
  SIEVE_CUDA_CHECK_LAUNCH();
  sample_kernel<<<static_cast<unsigned>(params.num_seqs), kThreads, 0, stream>>>(params);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
