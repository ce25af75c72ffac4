#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace sieve {

TensorView::TensorView(void* data, DType dtype, std::span<const int64_t> shape, Device device)
    : data_(data), dtype_(dtype), device_(device), ndim_(static_cast<int>(shape.size())) {
  SIEVE_CHECK(ndim_ <= kMaxDims) << "ndim=" << ndim_;
  int64_t stride = 1;
  for (int d = ndim_ - 1; d >= 0; --d) {
    SIEVE_CHECK_GE(shape[d], 0);
    shape_[d] = shape[d];
    strides_[d] = stride;
    stride *= shape[d];
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim_; ++d) n *= shape_[d];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int d = ndim_ - 1; d >= 0; --d) {
    if (shape_[d] != 1 && strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

TensorView TensorView::slice(int dim, int64_t begin, int64_t end) const {
  SIEVE_CHECK(0 <= begin && begin <= end && end <= size(dim))
      << "slice [" << begin << ", " << end << ") of " << shape_string() << " dim " << dim;
  TensorView out = *this;
  out.data_ =
      static_cast<char*>(data_) + static_cast<int64_t>(dtype_bytes(dtype_, begin * strides_[dim]));
  out.shape_[dim] = end - begin;
  return out;
}

TensorView TensorView::select(int dim, int64_t index) const {
  SIEVE_CHECK(0 <= index && index < size(dim)) << "index " << index << " of " << shape_string();
  TensorView out = slice(dim, index, index + 1);
  for (int d = dim; d + 1 < ndim_; ++d) {
    out.shape_[d] = out.shape_[d + 1];
    out.strides_[d] = out.strides_[d + 1];
  }
  out.shape_[ndim_ - 1] = 0;
  out.strides_[ndim_ - 1] = 0;
  --out.ndim_;
  return out;
}

TensorView TensorView::reshape(std::initializer_list<int64_t> shape) const {
  SIEVE_CHECK(is_contiguous()) << "reshape of a strided view " << shape_string();
  TensorView out(data_, dtype_, std::span<const int64_t>(shape.begin(), shape.size()), device_);
  SIEVE_CHECK_EQ(out.numel(), numel());
  return out;
}

TensorView TensorView::unflatten(int dim, int64_t a, int64_t b) const {
  SIEVE_CHECK(ndim_ < kMaxDims) << "unflatten of a " << ndim_ << "-d view";
  SIEVE_CHECK_EQ(size(dim), a * b);
  TensorView out = *this;
  for (int d = ndim_; d > dim + 1; --d) {
    out.shape_[d] = shape_[d - 1];
    out.strides_[d] = strides_[d - 1];
  }
  out.shape_[dim] = a;
  out.strides_[dim] = strides_[dim] * b;
  out.shape_[dim + 1] = b;
  out.strides_[dim + 1] = strides_[dim];
  ++out.ndim_;
  return out;
}

std::string TensorView::shape_string() const {
  std::string s = "[";
  for (int d = 0; d < ndim_; ++d) {
    if (d) s += ", ";
    s += std::to_string(shape_[d]);
  }
  return s + "]";
}

Tensor Tensor::empty(DType dtype, std::span<const int64_t> shape) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  size_t bytes = dtype_bytes(dtype, numel);
  bytes = (bytes + 63) / 64 * 64;
  void* data = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  SIEVE_CHECK(data != nullptr) << "out of host memory allocating " << bytes << " bytes";
  std::shared_ptr<const void> owner(data, [](const void* p) { std::free(const_cast<void*>(p)); });
  return Tensor(TensorView(data, dtype, shape), std::move(owner));
}

Tensor Tensor::empty(DType dtype, std::initializer_list<int64_t> shape) {
  return empty(dtype, std::span<const int64_t>(shape.begin(), shape.size()));
}

Tensor Tensor::zeros(DType dtype, std::initializer_list<int64_t> shape) {
  Tensor t = empty(dtype, shape);
  std::memset(t.data<void>(), 0, t.nbytes());
  return t;
}

}  // namespace sieve
