#pragma once
// TensorView: a non-owning view (pointer, dtype, device, up to 4 dims, strides in elements).
// Tensor: a view plus shared ownership of the memory under it (host allocation, mapped file or
// device buffer). Views of views never copy.

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "core/check.h"
#include "core/dtype.h"

namespace sieve {

enum class Device : uint8_t { kCpu, kCuda };

class TensorView {
 public:
  static constexpr int kMaxDims = 4;

  TensorView() = default;
  // A contiguous (row-major) view of `shape` at `data`.
  TensorView(void* data, DType dtype, std::span<const int64_t> shape, Device device = Device::kCpu);
  TensorView(void* data, DType dtype, std::initializer_list<int64_t> shape,
             Device device = Device::kCpu)
      : TensorView(data, dtype, std::span<const int64_t>(shape.begin(), shape.size()), device) {}

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int ndim() const { return ndim_; }
  int64_t size(int dim) const { return shape_[checked(dim)]; }
  int64_t stride(int dim) const { return strides_[checked(dim)]; }
  int64_t numel() const;
  size_t nbytes() const { return dtype_bytes(dtype_, numel()); }
  bool is_contiguous() const;
  bool empty() const { return data_ == nullptr; }

  // Rows [begin, end) of dimension `dim`; same rank.
  TensorView slice(int dim, int64_t begin, int64_t end) const;
  // Index `index` of dimension `dim`; rank drops by one.
  TensorView select(int dim, int64_t index) const;
  // Same elements, new shape; the view must be contiguous.
  TensorView reshape(std::initializer_list<int64_t> shape) const;
  // Splits dimension `dim` of size a*b into (a, b); works on strided views.
  TensorView unflatten(int dim, int64_t a, int64_t b) const;

  std::string shape_string() const;

 private:
  int checked(int dim) const {
    SIEVE_CHECK(dim >= 0 && dim < ndim_) << "dim=" << dim << " ndim=" << ndim_;
    return dim;
  }

  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> shape_{};
  std::array<int64_t, kMaxDims> strides_{};
};

class Tensor {
 public:
  Tensor() = default;
  // A view that keeps `owner` (whatever holds the memory) alive.
  Tensor(TensorView view, std::shared_ptr<const void> owner)
      : view_(view), owner_(std::move(owner)) {}

  // Uninitialized, 64-byte aligned host memory.
  static Tensor empty(DType dtype, std::initializer_list<int64_t> shape);
  static Tensor empty(DType dtype, std::span<const int64_t> shape);
  static Tensor zeros(DType dtype, std::initializer_list<int64_t> shape);

  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }  // NOLINT: a Tensor is usable as a view
  template <typename T>
  T* data() const {
    return view_.data<T>();
  }
  DType dtype() const { return view_.dtype(); }
  int ndim() const { return view_.ndim(); }
  int64_t size(int dim) const { return view_.size(dim); }
  int64_t numel() const { return view_.numel(); }
  size_t nbytes() const { return view_.nbytes(); }
  bool empty() const { return view_.empty(); }

 private:
  TensorView view_;
  std::shared_ptr<const void> owner_;
};

}  // namespace sieve
