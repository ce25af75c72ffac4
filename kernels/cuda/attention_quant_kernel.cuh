#pragma once
// The quantized formats' decode kernel (fp8_e4m3, int8, int4; head_dim 64 and 128): the FMA
// class's launches of 4 packed rows a block (one row a warp in attention_kernel.cuh's terms).
// Included only by the files under kernels/cuda/instances/, one template instance each.
//
// Why a kernel of its own. The generic KvQuant instance of attention_kernel.cuh dequantizes each
// tile into f32 shared memory and every warp then reads all of it: four warps convert the same
// elements four times, the f32 tiles halve the blocks an SM holds, and the loads pass through
// registers. Here the raw bytes (elements, a quarter or an eighth of f32's) stream through
// shared memory with cp.async, and the block's work is cut the other way: every warp scores all
// four packed rows of the block (a GQA group of 4 in one block, as the bf16 kernel's) over its
// own tiles (tiles warp, warp + 4, ...), so each element is converted once, in registers, and
// feeds four rows' FMAs. Each warp runs its own two-stage pipeline (no block barrier in the loop)
// and keeps its own online softmax; the four warps' (m, l, o) are merged at the end, as the
// combine kernel merges splits.
//
// Scales are applied once per dot product, not per element: fp8/int8 score = s_k · Σ q·k_q and
// P·V accumulates (p · s_v) · v_q; int4 subtracts each group's zero point while converting (in
// half, exactly: n - z is an integer in [-15, 15]) and scales each 32-element group's partial
// dot product (a 16-byte chunk of the row is one group). The element conversions are exact
// (e4m3 -> half -> f32; int8 and int4 by magic-number float construction), so the results differ
// from the f32-tile instance only by f32 rounding order.
//
// Scales travel beside the copies as plain loads: lane j loads those of its slot j (the slot it
// scores), one tile ahead, into registers (a 2-byte fp8/int8 record is not a cp.async size).

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/cuda/attention_kernel.cuh"

namespace sieve::kernels::cuda::attention_impl {

// A format's rows in shared memory (and the arena: data_bytes, meta_bytes of kv_quant.cuh).
template <int kFormat, int kHeadDim>
struct QuantGeometry {
  static_assert(kFormat == kKvFp8E4M3 || kFormat == kKvInt8 || kFormat == kKvInt4);
  static_assert(kHeadDim == 64 || kHeadDim == 128);
  static constexpr bool kInt4 = kFormat == kKvInt4;
  static constexpr int kDataBytes = kInt4 ? kHeadDim / 2 : kHeadDim;
  static constexpr int kChunks = kDataBytes / 16;  // 16-byte chunks a row
  static constexpr int kChunkDims = kInt4 ? 32 : 16;
  static constexpr int kGroups = kHeadDim / 32;  // int4 scale groups: one a chunk
  static constexpr int kMetaBytes = kInt4 ? 3 * kGroups : 2;
  static constexpr int kMetaWords = (kMetaBytes + 3) / 4;
  static constexpr int kKRow = kDataBytes + 16;  // padded: lane j reads row j, conflict-free
  static constexpr int kVRow = kDataBytes;       // every lane reads the same row
  static constexpr int kStageBytes = kTile * (kKRow + kVRow);
  static constexpr int kStages = 2;  // per warp
  static constexpr int kDPerLane = kHeadDim / 32;
  static constexpr int kVLaneBytes = kInt4 ? kDPerLane / 2 : kDPerLane;
};

constexpr int kQuantRows = kWarps;  // packed rows a block, every warp scoring all of them

// Shared memory: q rows (f32), each warp's stages, its slots' probabilities (a float4 of the four
// rows' a slot) and, for int4, its slots' V (scale, zero magic) per group.
template <int kFormat, int kHeadDim>
constexpr size_t quant_smem_bytes() {
  using G = QuantGeometry<kFormat, kHeadDim>;
  return static_cast<size_t>(kQuantRows) * kHeadDim * 4 +
         static_cast<size_t>(kWarps) * G::kStages * G::kStageBytes + kWarps * kTile * 16 +
         (G::kInt4 ? static_cast<size_t>(kWarps) * kTile * G::kGroups * 8 : 0);
}

// A slot's scale records, as loaded (zeros for slots past the end: their values are 0 · 0).
template <int kWords>
struct QuantMeta {
  uint32_t k[kWords], v[kWords];
};

// Two halves (1024 + n each, exact) minus the packed pair `zero_magic` (1024 + z each): n - z as
// f32, exactly.
__device__ __forceinline__ float2 magic_pair_to_f32(uint32_t halves, uint32_t zero_magic) {
  const __half2 h = __hsub2(*reinterpret_cast<const __half2*>(&halves),
                            *reinterpret_cast<const __half2*>(&zero_magic));
  return __half22float2(h);
}

// e4m3 pair (the low byte first) as f32, exactly (through half; the NaN code stays NaN).
__device__ __forceinline__ float2 fp8x2_to_f32(uint32_t bits16) {
  const __half2_raw raw =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits16 & 0xffffu), __NV_E4M3);
  return __half22float2(__half2(raw));
}

// Signed byte e of `biased` (the word XOR 0x80808080) as f32: 2^23 + (b + 128) built from bits.
__device__ __forceinline__ float int8_to_f32(uint32_t biased, int e) {
  return __uint_as_float(__byte_perm(biased, 0x4b000000u, 0x7440u + e)) - 8388736.0f;
}

// The 4 (fp8, int8) or 8 (int4, nibble i = element i) elements of one 4-byte word as f32; int4
// subtracts `zero_magic`'s zero point.
template <int kFormat>
__device__ __forceinline__ void decode_word(uint32_t word, uint32_t zero_magic, float* out) {
  if constexpr (kFormat == kKvFp8E4M3) {
    const float2 lo = fp8x2_to_f32(word), hi = fp8x2_to_f32(word >> 16);
    out[0] = lo.x;
    out[1] = lo.y;
    out[2] = hi.x;
    out[3] = hi.y;
  } else if constexpr (kFormat == kKvInt8) {
    const uint32_t biased = word ^ 0x80808080u;
#pragma unroll
    for (int e = 0; e < 4; ++e) out[e] = int8_to_f32(biased, e);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // nibbles i and i + 4 in one half2
      const float2 f =
          magic_pair_to_f32(((word >> (4 * i)) & 0x000f000fu) | 0x64006400u, zero_magic);
      out[i] = f.x;
      out[i + 4] = f.y;
    }
  }
}

// A lane's kDPerLane elements of a V row (kVLaneBytes bytes, contiguous) as f32.
template <int kFormat, int kHeadDim>
__device__ __forceinline__ void decode_v_lane(const uint8_t* src, uint32_t zero_magic, float* out) {
  using G = QuantGeometry<kFormat, kHeadDim>;
  if constexpr (G::kVLaneBytes == 4) {
    decode_word<kFormat>(*reinterpret_cast<const uint32_t*>(src), zero_magic, out);
  } else if constexpr (G::kVLaneBytes == 2) {
    const uint32_t bits = *reinterpret_cast<const uint16_t*>(src);
    if constexpr (kFormat == kKvFp8E4M3) {
      const float2 f = fp8x2_to_f32(bits);
      out[0] = f.x;
      out[1] = f.y;
    } else if constexpr (kFormat == kKvInt8) {
      const uint32_t biased = bits ^ 0x8080u;
      out[0] = int8_to_f32(biased, 0);
      out[1] = int8_to_f32(biased, 1);
    } else {  // int4, 4 elements: bytes 0 and 1 into the two halves, then low and high nibbles
      const uint32_t spread = __byte_perm(bits, 0u, 0x4140u);
      const float2 even = magic_pair_to_f32((spread & 0x000f000fu) | 0x64006400u, zero_magic);
      const float2 odd = magic_pair_to_f32(((spread >> 4) & 0x000f000fu) | 0x64006400u, zero_magic);
      out[0] = even.x;
      out[1] = odd.x;
      out[2] = even.y;
      out[3] = odd.y;
    }
  } else {  // int4, head_dim 64: one byte, 2 elements
    static_assert(G::kInt4 && G::kVLaneBytes == 1);
    const uint32_t bits = *src;
    const float2 f =
        magic_pair_to_f32(((bits | (bits << 12)) & 0x000f000fu) | 0x64006400u, zero_magic);
    out[0] = f.x;
    out[1] = f.y;
  }
}

// int4 record fields (kv_quant.cuh: group g's half scale at byte 2g, its zero at byte 2G + g).
template <int kGroups, int kWords>
__device__ __forceinline__ float int4_scale(const uint32_t (&meta)[kWords], int g) {
  const uint32_t bits = (meta[(2 * g) / 4] >> (8 * ((2 * g) % 4))) & 0xffffu;
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}
template <int kGroups, int kWords>
__device__ __forceinline__ uint32_t int4_zero_magic(const uint32_t (&meta)[kWords], int g) {
  const int byte = 2 * kGroups + g;
  const uint32_t zero = (meta[byte / 4] >> (8 * (byte % 4))) & 0xffu;
  return (0x6400u + zero) * 0x10001u;  // 1024 + z in both halves
}
__device__ __forceinline__ float half_bits_to_f32(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
}

// Issues one warp's copies of the tile at iteration index `tile_start` into `stage` (K rows
// padded, then V rows; zero-filled past `kv_end`) and the loads of lane j's slot's scale records
// into `meta`. Each lane locates its own slot (page lookup) once; the copies take their row
// address from the slot's lane by a shuffle, consecutive lanes copying consecutive 16 bytes.
template <int kFormat, int kHeadDim>
__device__ __forceinline__ void issue_quant_tile(
    const Launch& p, const WorkItem<false>& w, int kv_head, int tile_start, int kv_end,
    uint8_t* stage, QuantMeta<QuantGeometry<kFormat, kHeadDim>::kMetaWords>& meta) {
  using G = QuantGeometry<kFormat, kHeadDim>;
  const int lane = threadIdx.x % 32;
  const uint8_t* arena = static_cast<const uint8_t*>(p.arena);
  const int64_t v_rows = static_cast<int64_t>(p.num_kv_heads) * p.tokens_per_page;
  const int index = tile_start + lane;
  long long row_base = 0;  // byte offset of the slot's K elements in the arena
#pragma unroll
  for (int i = 0; i < G::kMetaWords; ++i) meta.k[i] = meta.v[i] = 0;
  if (index < kv_end) {
    const int virtual_slot = w.virtual_slot(index);
    const int slot = virtual_slot < w.prefix ? virtual_slot : w.gap + (virtual_slot - w.prefix);
    const int64_t page_base =
        (static_cast<int64_t>(p.layer) * p.num_pages + w.pages[slot / p.tokens_per_page]) *
        p.layer_page_elems;
    const int64_t row =
        static_cast<int64_t>(kv_head) * p.tokens_per_page + slot % p.tokens_per_page;
    row_base = page_base + row * G::kDataBytes;
    const uint8_t* k_meta = arena + page_base + p.meta_plane + row * G::kMetaBytes;
    const uint8_t* v_meta = k_meta + v_rows * G::kMetaBytes;
    if constexpr (G::kMetaBytes % 4 == 0) {  // int4 head_dim 128: 12-byte records, 4-aligned
#pragma unroll
      for (int i = 0; i < G::kMetaWords; ++i) {
        meta.k[i] = reinterpret_cast<const uint32_t*>(k_meta)[i];
        meta.v[i] = reinterpret_cast<const uint32_t*>(v_meta)[i];
      }
    } else {  // 2- or 6-byte records, 2-aligned
#pragma unroll
      for (int i = 0; i < G::kMetaBytes / 2; ++i) {
        const int shift = 16 * (i % 2);
        meta.k[i / 2] |= static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(k_meta)[i])
                         << shift;
        meta.v[i / 2] |= static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(v_meta)[i])
                         << shift;
      }
    }
  }
  const int64_t v_offset = v_rows * G::kDataBytes;
  constexpr int kCopies = kTile * G::kChunks / 32;  // per lane, for K and for V each
#pragma unroll
  for (int i = 0; i < kCopies; ++i) {
    const int c = lane + 32 * i;
    const int slot_local = c / G::kChunks, chunk = c % G::kChunks;
    const long long src = __shfl_sync(0xffffffffu, row_base, slot_local);
    const bool valid = tile_start + slot_local < kv_end;
    const uint8_t* k_src = valid ? arena + src + 16 * chunk : arena;
    cp_async16(stage + slot_local * G::kKRow + 16 * chunk, k_src, valid);
    cp_async16(stage + kTile * G::kKRow + slot_local * G::kVRow + 16 * chunk,
               valid ? k_src + v_offset : arena, valid);
  }
}

// Blocks an SM holds, by shared memory (228 KB an SM, 1 KB of it reserved a block): the register
// bound handed to ptxas, so that registers never lower it.
template <int kFormat, int kHeadDim>
constexpr int quant_blocks_per_sm() {
  const int blocks =
      static_cast<int>((228 * 1024) / (quant_smem_bytes<kFormat, kHeadDim>() + 1024));
  return blocks < 1 ? 1 : blocks > 6 ? 6 : blocks;  // 6: at least 85 registers a thread
}

template <int kFormat, int kHeadDim>
__global__ void __launch_bounds__(kThreads, (quant_blocks_per_sm<kFormat, kHeadDim>()))
    quant_decode_kernel(Launch p) {
  using G = QuantGeometry<kFormat, kHeadDim>;
  constexpr int kRows = kQuantRows;
  constexpr int kDPerLane = G::kDPerLane;
  static_assert(kRows == 4, "a slot's probabilities are one float4");

  wait_for_prior_kernels();
  allow_next_kernel();
  const Plan plan = *p.plan;
  const int item = blockIdx.x;
  if (item >= plan.num_items) return;
  const int kv_head = blockIdx.y;
  const WorkItem<false> w = work_item<false>(p, plan, item, kv_head, kRows);
  // A batch mixing formats runs an instance per format: blocks of other formats exit here.
  if (p.kv_formats && p.kv_formats[w.seq] != p.format) return;
  const int q_begin = w.q_begin, packed_rows = w.packed_rows, first_row = w.first_row;
  const int kv_start = w.kv_start, kv_end = w.kv_end;

  extern __shared__ __align__(16) unsigned char smem[];
  float* q_s = reinterpret_cast<float*>(smem);
  uint8_t* stages_s = reinterpret_cast<uint8_t*>(q_s + kRows * kHeadDim);
  float4* prob_s = reinterpret_cast<float4*>(stages_s + kWarps * G::kStages * G::kStageBytes);
  [[maybe_unused]] float2* vmeta_s =
      reinterpret_cast<float2*>(prob_s + kWarps * kTile);  // int4 only

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m[kRows], l[kRows], o[kRows][kDPerLane];
  int limit[kRows];  // exclusive causal limit of each row
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int packed = first_row + r;
    limit[r] = packed < packed_rows ? min(w.row_limit(p, packed), kv_end) : 0;
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) o[r][i] = 0.0f;
  }

  // This warp's tiles: warp, warp + kWarps, ... of the split's.
  const int num_tiles = (kv_end - kv_start + kTile - 1) / kTile;
  const int my_tiles = num_tiles > warp ? (num_tiles - warp + kWarps - 1) / kWarps : 0;
  uint8_t* my_stages = stages_s + warp * G::kStages * G::kStageBytes;
  float4* my_prob = prob_s + warp * kTile;
  [[maybe_unused]] float2* my_vmeta = vmeta_s + warp * kTile * G::kGroups;
  // The first tile's copies fly while q is staged.
  QuantMeta<G::kMetaWords> next{}, cur{};
  if (my_tiles > 0) {
    issue_quant_tile<kFormat, kHeadDim>(p, w, kv_head, kv_start + warp * kTile, kv_end, my_stages,
                                        next);
  }
  cp_async_commit();

  for (int e = threadIdx.x; e < kRows * kHeadDim; e += kThreads) {
    const int r = e / kHeadDim, d = e % kHeadDim;
    const int packed = first_row + r;
    float value = 0.0f;
    if (packed < packed_rows) {
      const int token = q_begin + packed / p.group;
      const int head = kv_head * p.group + packed % p.group;
      value = to_float(p.q[token * p.q_stride_token + head * p.q_stride_head + d]) * p.scale_log2;
    }
    q_s[e] = value;
  }
  __syncthreads();

  for (int n = 0; n < my_tiles; ++n) {
    const int tile_start = kv_start + (warp + n * kWarps) * kTile;
    cur = next;
    if (n + 1 < my_tiles) {
      issue_quant_tile<kFormat, kHeadDim>(p, w, kv_head, tile_start + kWarps * kTile, kv_end,
                                          my_stages + ((n + 1) % G::kStages) * G::kStageBytes,
                                          next);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncwarp();  // every lane's copies of this tile have landed
    const uint8_t* k_tile = my_stages + (n % G::kStages) * G::kStageBytes;
    const uint8_t* v_tile = k_tile + kTile * G::kKRow;

    // Scores of slot tile_start + lane for the block's rows.
    float score[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) score[r] = 0.0f;
    const uint8_t* k_row = k_tile + lane * G::kKRow;
#pragma unroll
    for (int c = 0; c < G::kChunks; ++c) {
      const uint4 raw = *reinterpret_cast<const uint4*>(k_row + 16 * c);
      const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
      uint32_t zero_magic = 0;
      if constexpr (G::kInt4) zero_magic = int4_zero_magic<G::kGroups>(cur.k, c);
      float part[kRows];  // this chunk's dot products (int4: one group's, scaled after)
#pragma unroll
      for (int r = 0; r < kRows; ++r) part[r] = 0.0f;
#pragma unroll
      for (int wd = 0; wd < 4; ++wd) {
        constexpr int kPerWord = G::kInt4 ? 8 : 4;
        float kf[kPerWord];
        decode_word<kFormat>(words[wd], zero_magic, kf);
        const int d0 = c * G::kChunkDims + wd * kPerWord;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const float4* qv = reinterpret_cast<const float4*>(q_s + r * kHeadDim + d0);
#pragma unroll
          for (int j = 0; j < kPerWord / 4; ++j) {
            const float4 q4 = qv[j];
            part[r] += q4.x * kf[4 * j] + q4.y * kf[4 * j + 1] + q4.z * kf[4 * j + 2] +
                       q4.w * kf[4 * j + 3];
          }
        }
      }
      if constexpr (G::kInt4) {
        const float scale = int4_scale<G::kGroups>(cur.k, c);
#pragma unroll
        for (int r = 0; r < kRows; ++r) score[r] += scale * part[r];
      } else {
#pragma unroll
        for (int r = 0; r < kRows; ++r) score[r] += part[r];
      }
    }
    if constexpr (!G::kInt4) {
      const float k_scale = half_bits_to_f32(cur.k[0]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) score[r] *= k_scale;
    }

    float prob[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float x = tile_start + lane < limit[r] ? score[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(x));
      if (m_new == -INFINITY) {  // nothing visible yet: keep the empty state
        prob[r] = 0.0f;
        continue;
      }
      prob[r] = exp2f(x - m_new);
      const float alpha = exp2f(m[r] - m_new);
      l[r] = l[r] * alpha + warp_sum(prob[r]);
      m[r] = m_new;
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) o[r][i] *= alpha;
    }
    // Slot lane's probabilities (fp8/int8: times its V scale) and, int4, its V groups' scales.
    if constexpr (G::kInt4) {
      my_prob[lane] = make_float4(prob[0], prob[1], prob[2], prob[3]);
#pragma unroll
      for (int g = 0; g < G::kGroups; ++g) {
        my_vmeta[lane * G::kGroups + g] =
            make_float2(int4_scale<G::kGroups>(cur.v, g),
                        __uint_as_float(int4_zero_magic<G::kGroups>(cur.v, g)));
      }
    } else {
      const float v_scale = half_bits_to_f32(cur.v[0]);
      my_prob[lane] =
          make_float4(prob[0] * v_scale, prob[1] * v_scale, prob[2] * v_scale, prob[3] * v_scale);
    }
    __syncwarp();

    // o += P·V: lane owns dimensions [lane · kDPerLane, + kDPerLane) (int4: one group's).
    const int valid_slots = min(kTile, kv_end - tile_start);
    [[maybe_unused]] const int group = lane * kDPerLane / 32;
#pragma unroll 4
    for (int j = 0; j < valid_slots; ++j) {
      float4 pj = my_prob[j];
      uint32_t zero_magic = 0;
      if constexpr (G::kInt4) {
        const float2 vm = my_vmeta[j * G::kGroups + group];
        zero_magic = __float_as_uint(vm.y);
        pj.x *= vm.x;
        pj.y *= vm.x;
        pj.z *= vm.x;
        pj.w *= vm.x;
      }
      float vf[kDPerLane];
      decode_v_lane<kFormat, kHeadDim>(v_tile + j * G::kVRow + lane * G::kVLaneBytes, zero_magic,
                                       vf);
      const float pr[kRows] = {pj.x, pj.y, pj.z, pj.w};
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int i = 0; i < kDPerLane; ++i) o[r][i] += pr[r] * vf[i];
      }
    }
    __syncwarp();  // the next iteration's copies and probabilities overwrite this tile's
  }

  // Merge the warps' (m, l, o) per row through the (now idle) stages; warp r writes row r.
  __syncthreads();
  float* merge_o = reinterpret_cast<float*>(stages_s);  // [warp][row][kHeadDim]
  float2* merge_ml = reinterpret_cast<float2*>(merge_o + kWarps * kRows * kHeadDim);
  static_assert(kWarps * kRows * (kHeadDim * 4 + 8) <= kWarps * G::kStages * G::kStageBytes);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) {
      merge_o[(warp * kRows + r) * kHeadDim + lane * kDPerLane + i] = o[r][i];
    }
    if (lane == 0) merge_ml[warp * kRows + r] = make_float2(m[r], l[r]);
  }
  __syncthreads();
  const int row = warp;
  const int packed = first_row + row;
  if (packed >= packed_rows) return;
  float max = -INFINITY;
#pragma unroll
  for (int v = 0; v < kWarps; ++v) max = fmaxf(max, merge_ml[v * kRows + row].x);
  float sum = 0.0f, out[kDPerLane];
#pragma unroll
  for (int i = 0; i < kDPerLane; ++i) out[i] = 0.0f;
#pragma unroll
  for (int v = 0; v < kWarps; ++v) {
    const float2 ml = merge_ml[v * kRows + row];
    if (ml.x == -INFINITY) continue;  // a warp that saw nothing (or no tile) of this row
    const float weight = exp2f(ml.x - max);
    sum += ml.y * weight;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) {
      out[i] += merge_o[(v * kRows + row) * kHeadDim + lane * kDPerLane + i] * weight;
    }
  }
  if (plan.split_mode) {
    const int64_t partial = (static_cast<int64_t>(item) * p.num_kv_heads + kv_head) * kRows + row;
    float* dst = p.partial_o + partial * kHeadDim;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) dst[lane * kDPerLane + i] = out[i];
    if (lane == 0) p.partial_ml[partial] = make_float2(max, sum);
  } else {
    const int token = q_begin + packed / p.group;
    const int head = kv_head * p.group + packed % p.group;
    bf16* dst = p.out + token * p.out_stride_token + head * p.out_stride_head;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) dst[lane * kDPerLane + i] = from_float<bf16>(out[i] * inv);
  }
}

template <int kFormat, int kHeadDim>
void run_quant_decode_kernel(const Launch& launch, int grid_items, cudaStream_t stream) {
  auto* kernel = quant_decode_kernel<kFormat, kHeadDim>;
  constexpr size_t kSmem = quant_smem_bytes<kFormat, kHeadDim>();
  static const bool configured = [&] {
    SIEVE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(kSmem)));
    return true;
  }();
  (void)configured;
  const dim3 grid(static_cast<unsigned>(grid_items), static_cast<unsigned>(launch.num_kv_heads));
  kernel<<<grid, kThreads, kSmem, stream>>>(launch);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda::attention_impl

// One explicit instance, for the files under kernels/cuda/instances/.
#define SIEVE_QUANT_DECODE_INSTANCE(kFormat, kHeadDim)                                     \
  template void ::sieve::kernels::cuda::attention_impl::run_quant_decode_kernel<kFormat,   \
                                                                                kHeadDim>( \
      const ::sieve::kernels::cuda::attention_impl::Launch&, int, cudaStream_t)
