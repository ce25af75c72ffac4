#pragma once
// The tensor-core paged attention kernel for prefill chunks (bf16 K/V, head_dim 64 or 128), in
// FlashAttention-2's shape. Included only by kernels/cuda/instances/attention_tc_*.cu.
//
// It shares the FMA kernel's decomposition (attention.cuh): a work item is (sequence, chunk of
// kTcRows packed query rows, split) of one KV head (grid.y), rows packed token-major over the GQA
// group, slots indexed virtually around a compacted head's dead gap, and the same plan, partials
// and combine kernel. The plan gives this kernel only the sequences with at least kTcRows packed
// rows (attention.cu); the FMA kernel takes the others.
//
// Inside a block, 4 warps own 16 query rows each. K and V tiles of kTcSlots slots stream through
// shared memory (cp.async, two stages, rows padded by 16 bytes so ldmatrix is conflict-free).
// Per tile a warp computes S = Q·Kᵀ with mma.m16n8k16 (bf16 in, f32 accumulate; Q's fragments
// stay in registers for the whole block), masks and rescales S (online softmax in base 2), packs
// P into bf16 A-fragments straight from the accumulator registers, and adds P·V with V's
// fragments read by ldmatrix.trans. With kHooks (attention.cuh) a third pair of stages holds the
// tiles' slot biases, added to S before the mask.

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention_kernel.cuh"  // work items, K/V tile loads, cp.async
#include "kernels/cuda/check.h"

namespace sieve::kernels::cuda::attention_impl {

constexpr int kTcSlots = 64;  // KV slots per shared-memory tile

// Two stages of K and V tiles; the Q tile passes through stage 1's K tile before the first
// prefetch of stage 1. With kHooks, two stages of biases follow. Three blocks fit on an SM
// (69.6 KB each at head_dim 128, 70.1 KB with the hooks).
template <int kHeadDim, bool kHooks>
constexpr size_t tc_smem_bytes() {
  static_assert(kTcRows <= kTcSlots, "the Q tile borrows a K stage");
  return 4ull * kTcSlots * padded_row<bf16>(kHeadDim) * sizeof(bf16) +
         (kHooks ? 2ull * kTcSlots * sizeof(float) : 0);
}
constexpr int kTcBlocksPerSm = 3;

namespace tc {

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}

// c += a·b for one m16n8k16 tile: a row-major 16x16 (4 registers), b 16x8 "column" (2), c f32.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // the host never picks this kernel below sm_80
#endif
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Max and sum over the 4 lanes of a quad (they hold one accumulator row between them).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace tc

// KvT: bf16, or KvQuant (the quantized formats, dequantized into bf16 tiles; no hooks).
template <int kHeadDim, bool kHooks, typename KvT>
__global__ void __launch_bounds__(kThreads, kTcBlocksPerSm) tc_attention_kernel(Launch p) {
  constexpr bool kQuant = std::is_same_v<KvT, KvQuant>;
  static_assert(!(kQuant && kHooks), "the hooks read bf16 K/V only");
  static_assert(kHeadDim % 32 == 0 && kTcRows == kWarps * 16);
  constexpr int kRow = padded_row<bf16>(kHeadDim);
  constexpr int kKSteps = kHeadDim / 16;  // k-steps of Q·Kᵀ
  constexpr int kDTiles = kHeadDim / 8;   // n-tiles of P·V
  constexpr int kSTiles = kTcSlots / 8;   // n-tiles of Q·Kᵀ

  wait_for_prior_kernels();
  allow_next_kernel();
  const Plan plan = *p.plan;
  if (static_cast<int>(blockIdx.x) >= plan.num_items) return;
  // Later chunks of a causal prompt see more slots: launch them first.
  const int item = plan.num_items - 1 - static_cast<int>(blockIdx.x);
  const int kv_head = blockIdx.y;
  const WorkItem<kHooks> w = work_item<kHooks>(p, plan, item, kv_head, kTcRows);
  // A mixed batch runs an instance per format (attention_kernel says why).
  if (p.kv_formats && p.kv_formats[w.seq] != p.format) return;
  const int q_begin = w.q_begin, packed_rows = w.packed_rows, first_row = w.first_row;
  const int kv_start = w.kv_start, kv_end = w.kv_end;

  extern __shared__ __align__(16) unsigned char smem[];
  bf16* kv_s = reinterpret_cast<bf16*>(smem);
  constexpr int kStage = kTcSlots * kRow;  // one K or V stage
  bf16* q_s = kv_s + 2 * kStage;           // stage 1's K tile, free until the first prefetch
  float* bias_s = reinterpret_cast<float*>(kv_s + 4 * kStage);  // kHooks: 2 stages

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int num_tiles = (kv_end - kv_start + kTcSlots - 1) / kTcSlots;
  if (num_tiles > 0) {
    if constexpr (kQuant) {
      load_quant_tile_bf16<kTcSlots>(p, w, kv_head, kHeadDim, kv_start, kv_end, kv_s,
                                     kv_s + kStage);
    } else {
      load_tile<bf16, kTcSlots>(p, w, kv_head, kHeadDim, kv_start, kv_end, kv_s, kv_s + kStage,
                                bias_s);
    }
  }
  cp_async_commit();

  // Q rows into shared memory (zeros past the sequence), then into A-fragments.
  for (int c = threadIdx.x; c < kTcRows * kHeadDim / 8; c += kThreads) {
    const int r = c / (kHeadDim / 8), vec = c % (kHeadDim / 8);
    const int packed = first_row + r;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (packed < packed_rows) {
      const int token = q_begin + packed / p.group;
      const int head = kv_head * p.group + packed % p.group;
      value = *reinterpret_cast<const uint4*>(p.q + token * p.q_stride_token +
                                              head * p.q_stride_head + vec * 8);
    }
    *reinterpret_cast<uint4*>(q_s + r * kRow + vec * 8) = value;
  }
  __syncthreads();
  uint32_t q_frag[kKSteps][4];
  {
    // Matrix i = lane / 8: rows +8 for odd i, columns +8 for i >= 2 (a0a1, a2a3, a4a5, a6a7).
    const int i = lane / 8;
    const bf16* row = q_s + (warp * 16 + (i & 1) * 8 + lane % 8) * kRow + (i >> 1) * 8;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) tc::ldmatrix_x4(q_frag[kk], row + kk * 16);
  }
  __syncthreads();  // every warp holds its Q fragments before stage 1 is overwritten

  // This thread's two accumulator rows: g and g + 8 of the warp's 16.
  const int g = lane / 4, quad = lane % 4;
  int limit[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int packed = first_row + warp * 16 + g + 8 * h;
    limit[h] = packed < packed_rows ? min(w.row_limit(p, packed), kv_end) : 0;
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDTiles; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int tile_start = kv_start + tile * kTcSlots;
    if (tile + 1 < num_tiles) {
      bf16* next = kv_s + ((tile + 1) % 2) * 2 * kStage;
      if constexpr (kQuant) {  // synchronous: the block waits for these loads
        load_quant_tile_bf16<kTcSlots>(p, w, kv_head, kHeadDim, tile_start + kTcSlots, kv_end, next,
                                       next + kStage);
      } else {
        load_tile<bf16, kTcSlots>(p, w, kv_head, kHeadDim, tile_start + kTcSlots, kv_end, next,
                                  next + kStage, bias_s + ((tile + 1) % 2) * kTcSlots);
      }
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* k_tile = kv_s + (tile % 2) * 2 * kStage;
    const bf16* v_tile = k_tile + kStage;

    // S = Q·Kᵀ. For K (rows = slots), non-transposed 8x8 loads give B-fragments directly:
    // matrix i covers slots +0..7 and columns (kk·16) + 8·(i & 1) of k-step kk + (i >> 1).
    float sc[kSTiles][4];
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
      const int i = lane / 8;
      const bf16* row = k_tile + (nt * 8 + lane % 8) * kRow + (i & 1) * 8 + (i >> 1) * 16;
#pragma unroll
      for (int kk = 0; kk < kKSteps; kk += 2) {
        uint32_t b[4];
        tc::ldmatrix_x4(b, row + kk * 16);
        tc::mma(sc[nt], q_frag[kk], b[0], b[1]);
        if (kk + 1 < kKSteps) tc::mma(sc[nt], q_frag[kk + 1], b[2], b[3]);
      }
    }

    // Online softmax in base 2 over this tile (with kHooks, plus each slot's bias); masked slots
    // are -inf.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int h = j / 2;
        const int column = nt * 8 + 2 * quad + (j & 1);
        const int slot = tile_start + column;
        float score = sc[nt][j] * p.scale_log2;
        if constexpr (kHooks) score += bias_s[(tile % 2) * kTcSlots + column] * kLog2e;
        const float x = slot < limit[h] ? score : -INFINITY;
        sc[nt][j] = x;
        tile_max[h] = fmaxf(tile_max[h], x);
      }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float m_new = fmaxf(m[h], tc::quad_max(tile_max[h]));
      base[h] = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: exp2 gives zeros
      alpha[h] = exp2f(m[h] - base[h]);
      m[h] = m_new;
      l[h] *= alpha[h];
    }
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }
    // P as A-fragments: the accumulators of n-tiles 2t and 2t + 1 are k-step t's a0..a7.
    uint32_t p_frag[kSTiles / 2][4];
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
      float pr[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        pr[j] = exp2f(sc[nt][j] - base[j / 2]);
        l[j / 2] += pr[j];
      }
      p_frag[nt / 2][(nt % 2) * 2 + 0] = tc::pack_bf16(pr[0], pr[1]);
      p_frag[nt / 2][(nt % 2) * 2 + 1] = tc::pack_bf16(pr[2], pr[3]);
    }
    // O += P·V. V's rows are slots (the k dimension): transposed 8x8 loads; matrix i covers
    // slots +8·(i & 1) and dims +8·(i >> 1), giving (b0, b1) of two adjacent d-tiles.
#pragma unroll
    for (int t = 0; t < kSTiles / 2; ++t) {
      const int i = lane / 8;
      const bf16* row = v_tile + (t * 16 + (i & 1) * 8 + lane % 8) * kRow + (i >> 1) * 8;
#pragma unroll
      for (int dt = 0; dt < kDTiles; dt += 2) {
        uint32_t b[4];
        tc::ldmatrix_x4_trans(b, row + dt * 8);
        tc::mma(o[dt], p_frag[t], b[0], b[1]);
        tc::mma(o[dt + 1], p_frag[t], b[2], b[3]);
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this stage
  }

  // Results: the normalized rows, or the partial (o, m, l) of this split.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float sum = tc::quad_sum(l[h]);
    const int row = warp * 16 + g + 8 * h;
    const int packed = first_row + row;
    if (packed >= packed_rows) continue;
    if (plan.split_mode) {
      const int64_t partial =
          (static_cast<int64_t>(item) * p.num_kv_heads + kv_head) * kTcRows + row;
      float* dst = p.partial_o + partial * kHeadDim;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        *reinterpret_cast<float2*>(dst + dt * 8 + 2 * quad) =
            make_float2(o[dt][2 * h], o[dt][2 * h + 1]);
      }
      if (quad == 0) p.partial_ml[partial] = make_float2(m[h], sum);
    } else {
      const int token = q_begin + packed / p.group;
      const int head = kv_head * p.group + packed % p.group;
      bf16* dst = p.out + token * p.out_stride_token + head * p.out_stride_head;
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8 + 2 * quad) =
            __floats2bfloat162_rn(o[dt][2 * h] * inv, o[dt][2 * h + 1] * inv);
      }
    }
  }
}

template <int kHeadDim, bool kHooks, typename KvT>
void run_tc_attention_kernel(const Launch& launch, int grid_items, cudaStream_t stream) {
  auto* kernel = tc_attention_kernel<kHeadDim, kHooks, KvT>;
  static const bool configured = [&] {
    SIEVE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(tc_smem_bytes<kHeadDim, kHooks>())));
    return true;
  }();
  (void)configured;
  const dim3 grid(static_cast<unsigned>(grid_items), static_cast<unsigned>(launch.num_kv_heads));
  kernel<<<grid, kThreads, tc_smem_bytes<kHeadDim, kHooks>(), stream>>>(launch);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda::attention_impl

// One explicit instance, for the files under kernels/cuda/instances/.
#define SIEVE_TC_ATTENTION_INSTANCE(kHeadDim, kHooks, KvT)                                        \
  template void ::sieve::kernels::cuda::attention_impl::run_tc_attention_kernel<kHeadDim, kHooks, \
                                                                                KvT>(             \
      const ::sieve::kernels::cuda::attention_impl::Launch&, int, cudaStream_t)
