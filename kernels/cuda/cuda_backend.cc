#include "kernels/cuda/cuda_backend.h"

namespace sieve::kernels::cuda {

StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device) {
  return UnimplementedError("CUDA backend for device " + std::to_string(device) +
                            " is not implemented yet; run with --device cpu");
}

}  // namespace sieve::kernels::cuda
