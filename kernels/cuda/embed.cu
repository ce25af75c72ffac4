// Row gather: one block per output row, 16-byte copies where both rows allow them.

#include <cstdio>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/embed.h"

namespace sieve::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// Unit: the copied word (uint4, or the element type itself); `units` per row.
template <typename Unit>
__global__ void __launch_bounds__(kThreads)
    embed_kernel(const int32_t* ids, StridedRows table, StridedRows out, int64_t units,
                 int elem_bytes) {
  const int64_t row = blockIdx.x;
  const int32_t id = ids[row];
  const int64_t table_rows = table.num_rows();
  if (id < 0 || id >= table_rows) {
    if (threadIdx.x == 0) {
      printf("embed: id %d of row %lld is outside the table of %lld rows\n", id,
             static_cast<long long>(row), static_cast<long long>(table_rows));
    }
    __trap();
  }
  const char* src = static_cast<const char*>(table.data) + table.row_offset(id) * elem_bytes;
  char* dst = static_cast<char*>(out.data) + out.row_offset(row) * elem_bytes;
  const Unit* s = reinterpret_cast<const Unit*>(src);
  Unit* d = reinterpret_cast<Unit*>(dst);
  for (int64_t i = threadIdx.x; i < units; i += kThreads) d[i] = s[i];
}

}  // namespace

void launch_embed(const int32_t* ids, int64_t num_ids, const StridedRows& table,
                  const StridedRows& out, int elem_bytes, cudaStream_t stream) {
  if (num_ids == 0) return;
  const int64_t row_bytes = table.row_size * elem_bytes;
  const dim3 grid(static_cast<unsigned>(num_ids));
  if (table.vectorizable(elem_bytes) && out.vectorizable(elem_bytes)) {
    embed_kernel<uint4><<<grid, kThreads, 0, stream>>>(ids, table, out, row_bytes / 16,
                                                       elem_bytes);
  } else if (elem_bytes == 4) {
    embed_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(ids, table, out, table.row_size,
                                                          elem_bytes);
  } else {
    embed_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(ids, table, out,
                                                          row_bytes / 2, elem_bytes);
  }
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda
