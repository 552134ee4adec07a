// The common tensor interface: Dims (a small shape), View<T, R> (typed, rank-R access for kernels),
// TensorView (the non-owning, type-erased description of a buffer every op takes) and Tensor (owning,
// with a per-device allocator). Shapes and strides are in elements, outermost first.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/device.hpp"
#include "ssm/core/device_backend.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/index.hpp"
#include "ssm/core/macros.hpp"


namespace ssm {

inline constexpr int kMaxRank = 8;

/// A shape or a stride list of at most kMaxRank entries, stored inline.
class Dims {
 public:
  Dims() = default;
  Dims(std::initializer_list<index_t> v) : Dims(std::span<const index_t>(v.begin(), v.size())) {}
  explicit Dims(std::span<const index_t> v) {
    SSM_CHECK(v.size() <= static_cast<std::size_t>(kMaxRank), "ssm::Dims: rank ", v.size(),
              " exceeds the maximum rank ", kMaxRank);
    rank_ = static_cast<int>(v.size());
    std::copy(v.begin(), v.end(), d_.begin());
  }
  explicit Dims(const std::vector<index_t>& v) : Dims(std::span<const index_t>(v.data(), v.size())) {}

  int size() const { return rank_; }
  index_t operator[](int i) const { return d_[static_cast<std::size_t>(i)]; }
  index_t& operator[](int i) { return d_[static_cast<std::size_t>(i)]; }
  const index_t* begin() const { return d_.data(); }
  const index_t* end() const { return d_.data() + rank_; }
  std::span<const index_t> span() const { return {d_.data(), static_cast<std::size_t>(rank_)}; }

  index_t product() const {
    index_t p = 1;
    for (int i = 0; i < rank_; ++i) p *= d_[static_cast<std::size_t>(i)];
    return p;
  }
  friend bool operator==(const Dims& a, const Dims& b) {
    return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
  }
  /// "(2, 16, 100)"
  std::string str() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(d_[static_cast<std::size_t>(i)]);
    return s + ")";
  }

 private:
  std::array<index_t, kMaxRank> d_{};
  int rank_ = 0;
};

/// Row-major (C order) strides of a shape.
inline Dims contiguous_strides(const Dims& shape) {
  Dims s = shape;
  index_t acc = 1;
  for (int i = shape.size() - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/// Typed, rank-R access to a strided buffer: what kernels index with. Trivially copyable, so it can
/// be passed by value to a CUDA kernel. No bounds checks: the op validated shapes before.
template <class T, int R>
struct View {
  T* data = nullptr;
  index_t shape[R] = {};
  index_t strides[R] = {};

  template <class... I>
  SSM_HOST_DEVICE T& operator()(I... i) const {
    static_assert(sizeof...(I) == R, "ssm::View: number of indices must equal the rank");
    const index_t idx[R] = {static_cast<index_t>(i)...};
    index_t off = 0;
    for (int k = 0; k < R; ++k) off += idx[k] * strides[k];
    return data[off];
  }
  SSM_HOST_DEVICE index_t size(int k) const { return shape[k]; }
  /// Pointer to element (i0, ..., i_{k-1}, 0, ...) for the leading indices given.
  template <class... I>
  SSM_HOST_DEVICE T* ptr(I... i) const {
    static_assert(sizeof...(I) <= R, "ssm::View::ptr: too many indices");
    const index_t idx[sizeof...(I) + 1] = {static_cast<index_t>(i)..., 0};
    index_t off = 0;
    for (int k = 0; k < static_cast<int>(sizeof...(I)); ++k) off += idx[k] * strides[k];
    return data + off;
  }
};

class Tensor;

/// A non-owning description of a buffer: data pointer, dtype, device, shape and strides in elements.
/// Every op takes its tensors as TensorViews. Copying a view never copies data.
///
/// A view never keeps its data alive. A Tensor converts to a view of its storage, so a view made
/// from a temporary Tensor dangles as soon as the statement ends; TensorView therefore refuses to be
/// constructed or assigned from a Tensor rvalue (see the deleted members below). Passing a temporary
/// Tensor straight to a `const TensorView&` parameter is still allowed: it lives until the call returns.
class TensorView {
 public:
  TensorView() = default;
  // Deleted: `in.u = Tensor::from_vector(...)`, `TensorView v = Tensor::zeros(...)` or
  // `Inputs in{.u = make_tensor()}` would keep a view of storage freed at the end of the statement.
  // Name the Tensor first (`const Tensor u = Tensor::from_vector(...); in.u = u;`) and keep it alive
  // for as long as the view is used.
  TensorView(const Tensor&&) = delete;
  TensorView& operator=(const Tensor&&) = delete;
  TensorView(void* data, DType dtype, Device device, const Dims& shape)
      : TensorView(data, dtype, device, shape, contiguous_strides(shape)) {}
  TensorView(void* data, DType dtype, Device device, const Dims& shape, const Dims& strides)
      : data_(data), dtype_(dtype), device_(device), shape_(shape), strides_(strides) {
    SSM_CHECK(shape.size() == strides.size(), "ssm::TensorView: shape ", shape.str(), " and strides ",
              strides.str(), " differ in rank");
    for (int i = 0; i < shape.size(); ++i)
      SSM_CHECK(shape[i] >= 0, "ssm::TensorView: negative extent in shape ", shape.str());
  }

  /// A view of host memory with a typed pointer: TensorView::of(ptr, {b, d, l}).
  template <class T>
  static TensorView of(T* data, const Dims& shape, Device device = Device::cpu()) {
    return TensorView(const_cast<std::remove_const_t<T>*>(data), dtype_of<T>(), device, shape);
  }

  bool defined() const { return data_ != nullptr || (shape_.size() > 0 && numel() == 0); }
  void* data() const { return data_; }
  template <class T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int rank() const { return shape_.size(); }
  const Dims& shape() const { return shape_; }
  const Dims& strides() const { return strides_; }
  index_t size(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  index_t stride(int i) const { return strides_[i < 0 ? i + rank() : i]; }
  index_t numel() const { return shape_.product(); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * size_of(dtype_); }

  bool is_contiguous() const {
    index_t acc = 1;
    for (int i = rank() - 1; i >= 0; --i) {
      if (shape_[i] != 1 && strides_[i] != acc) return false;
      acc *= shape_[i];
    }
    return true;
  }

  /// Typed rank-R access; throws ssm::Error naming `name` when dtype or rank differ.
  template <class T, int R>
  View<T, R> as(const char* name = "tensor") const {
    SSM_CHECK(dtype_ == dtype_of<std::remove_const_t<T>>(), "argument '", name, "': expected dtype ",
              ssm::name(dtype_of<std::remove_const_t<T>>()), ", got ", ssm::name(dtype_));
    SSM_CHECK(rank() == R, "argument '", name, "': expected rank ", R, ", got rank ", rank(), " with shape ",
              shape_.str());
    View<T, R> v;
    v.data = static_cast<T*>(data_);
    for (int k = 0; k < R; ++k) {
      v.shape[k] = shape_[k];
      v.strides[k] = strides_[k];
    }
    return v;
  }

  /// The sub-view with index i fixed along dimension dim (rank drops by one).
  TensorView select(int dim, index_t i) const {
    SSM_CHECK(dim >= 0 && dim < rank() && i >= 0 && i < shape_[dim], "ssm::TensorView::select: index ", i,
              " out of range for dimension ", dim, " of shape ", shape_.str());
    std::vector<index_t> sh, st;
    for (int k = 0; k < rank(); ++k)
      if (k != dim) {
        sh.push_back(shape_[k]);
        st.push_back(strides_[k]);
      }
    return TensorView(byte_offset(i * strides_[dim]), dtype_, device_, Dims(sh), Dims(st));
  }
  /// The sub-view [start, start + length) along dimension dim.
  TensorView narrow(int dim, index_t start, index_t length) const {
    SSM_CHECK(dim >= 0 && dim < rank() && start >= 0 && length >= 0 && start + length <= shape_[dim],
              "ssm::TensorView::narrow: [", start, ", ", start + length, ") out of range for dimension ", dim,
              " of shape ", shape_.str());
    Dims sh = shape_;
    sh[dim] = length;
    return TensorView(byte_offset(start * strides_[dim]), dtype_, device_, sh, strides_);
  }
  /// Same data, new shape; requires a contiguous view.
  TensorView reshape(const Dims& shape) const {
    SSM_CHECK(is_contiguous(), "ssm::TensorView::reshape: view with shape ", shape_.str(), " and strides ",
              strides_.str(), " is not contiguous");
    SSM_CHECK(shape.product() == numel(), "ssm::TensorView::reshape: cannot view ", shape_.str(), " as ",
              shape.str());
    return TensorView(data_, dtype_, device_, shape);
  }

 private:
  void* byte_offset(index_t elems) const {
    return static_cast<char*>(data_) + elems * static_cast<index_t>(size_of(dtype_));
  }

  void* data_ = nullptr;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu();
  Dims shape_;
  Dims strides_;
};

namespace detail {
inline constexpr std::size_t kHostAlignment = 64;  // one cache line, and a full AVX-512 vector

inline std::shared_ptr<void> allocate(std::size_t bytes, Device device) {
  if (device.is_cpu()) {
    const std::size_t rounded = std::max<std::size_t>(kHostAlignment, (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment);
    void* p = std::aligned_alloc(kHostAlignment, rounded);
    SSM_CHECK(p != nullptr, "ssm::Tensor: failed to allocate ", bytes, " bytes of host memory");
    return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  }
  const DeviceBackend& backend = backend_for("ssm::Tensor: cannot allocate", device);
  void* p = backend.allocate(bytes, device.index);
  const int index = device.index;
  auto* deallocate = backend.deallocate;  // the backend that allocated frees, even if another is registered later
  return std::shared_ptr<void>(p, [index, deallocate](void* q) { deallocate(q, index); });
}
}  // namespace detail

/// An owning tensor: a TensorView plus shared ownership of its storage. Copies share the storage.
/// Host memory is 64-byte aligned; CUDA memory comes from ssm::cuda (cudaMalloc).
class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Dims& shape, DType dtype, Device device = Device::cpu()) {
    std::int64_t bytes = static_cast<std::int64_t>(size_of(dtype));
    for (int i = 0; i < shape.size(); ++i) {
      SSM_CHECK(shape[i] >= 0, "ssm::Tensor::empty: negative extent in shape ", shape.str());
      SSM_CHECK(!__builtin_mul_overflow(bytes, shape[i], &bytes), "ssm::Tensor::empty: shape ", shape.str(),
                " of ", name(dtype), " overflows the addressable size");
    }
    Tensor t;
    t.storage_ = detail::allocate(static_cast<std::size_t>(bytes), device);
    t.view_ = TensorView(t.storage_.get(), dtype, device, shape);
    return t;
  }
  static Tensor zeros(const Dims& shape, DType dtype, Device device = Device::cpu());

  /// A CPU tensor holding a copy of values (row-major) with the given shape.
  template <class T>
  static Tensor from_vector(const Dims& shape, const std::vector<T>& values) {
    SSM_CHECK(static_cast<index_t>(values.size()) == shape.product(), "ssm::Tensor::from_vector: ",
              values.size(), " values for shape ", shape.str());
    Tensor t = empty(shape, dtype_of<T>());
    std::copy(values.begin(), values.end(), t.view_.data_as<T>());
    return t;
  }

  /// Adopts memory owned elsewhere: `owner` keeps it alive and releases it once, when the last copy
  /// of this Tensor goes away. Used by the DLPack import.
  static Tensor adopt(const TensorView& view, std::shared_ptr<void> owner) {
    Tensor t;
    t.view_ = view;
    t.storage_ = std::move(owner);
    return t;
  }

  /// The view of this tensor's storage. It does not own the storage: keep this Tensor alive while
  /// the view is in use.
  const TensorView& view() const& { return view_; }
  // Deleted: `opt.chunk_states = make_result().chunk_states.view()` keeps a view of a temporary that
  // is destroyed at the end of the statement. Store the result in a named variable first
  // (`const auto r = make_result(); opt.chunk_states = r.chunk_states.view();`).
  const TensorView& view() const&& = delete;
  /// A Tensor is usable wherever a view is. On a temporary, the conversion only serves to bind a
  /// `const TensorView&` parameter for the duration of a call; TensorView's deleted constructor and
  /// assignment from `const Tensor&&` stop it from being stored.
  operator const TensorView&() const& { return view_; }  // NOLINT(google-explicit-constructor)

  /// True once allocated, also for zero elements on a device whose allocator returns null for 0 bytes (cudaMalloc's
  /// convention): the storage's owner exists even where its pointer is null.
  bool defined() const { return storage_.use_count() > 0; }
  void* data() const { return view_.data(); }
  template <class T>
  T* data_as() const {
    SSM_CHECK(view_.dtype() == dtype_of<T>(), "ssm::Tensor::data_as: tensor has dtype ", name(view_.dtype()),
              ", requested ", name(dtype_of<T>()));
    return view_.data_as<T>();
  }
  DType dtype() const { return view_.dtype(); }
  Device device() const { return view_.device(); }
  int rank() const { return view_.rank(); }
  const Dims& shape() const { return view_.shape(); }
  const Dims& strides() const { return view_.strides(); }
  index_t size(int i) const { return view_.size(i); }
  index_t numel() const { return view_.numel(); }
  std::size_t nbytes() const { return view_.nbytes(); }
  const std::shared_ptr<void>& storage() const { return storage_; }
  long use_count() const { return storage_.use_count(); }

  template <class T, int R>
  View<T, R> as(const char* name = "tensor") const {
    return view_.template as<T, R>(name);
  }

  /// A contiguous copy on `device` (a CPU ↔ CUDA copy needs ssm::cuda).
  Tensor to(Device device) const;
  /// Contiguous CPU copy of the elements as a std::vector<T> (T must match the dtype).
  template <class T>
  std::vector<T> to_vector() const;

 private:
  std::shared_ptr<void> storage_;
  TensorView view_;
};

/// Copies src into dst elementwise (same shape and dtype; any strides; a copy that involves a CUDA device is one 2D
/// copy per index of the dims before the last strided one, so views strided in their inner dims take many).
inline void copy(const TensorView& dst, const TensorView& src) {
  SSM_CHECK(dst.shape() == src.shape(), "ssm::copy: shape mismatch, dst ", dst.shape().str(), " vs src ",
            src.shape().str());
  SSM_CHECK(dst.dtype() == src.dtype(), "ssm::copy: dtype mismatch, dst ", name(dst.dtype()), " vs src ",
            name(src.dtype()));
  if (dst.device().is_cpu() && src.device().is_cpu()) {
    const std::size_t es = size_of(src.dtype());
    const int r = src.rank();
    if (src.is_contiguous() && dst.is_contiguous()) {
      if (src.nbytes() > 0) std::copy_n(static_cast<const char*>(src.data()), src.nbytes(), static_cast<char*>(dst.data()));
      return;
    }
    std::array<index_t, kMaxRank> idx{};
    const index_t n = src.numel();
    for (index_t e = 0; e < n; ++e) {
      index_t so = 0, dof = 0;
      for (int k = 0; k < r; ++k) {
        so += idx[static_cast<std::size_t>(k)] * src.stride(k);
        dof += idx[static_cast<std::size_t>(k)] * dst.stride(k);
      }
      std::copy_n(static_cast<const char*>(src.data()) + so * static_cast<index_t>(es), es,
                  static_cast<char*>(dst.data()) + dof * static_cast<index_t>(es));
      for (int k = r - 1; k >= 0; --k) {
        if (++idx[static_cast<std::size_t>(k)] < src.size(k)) break;
        idx[static_cast<std::size_t>(k)] = 0;
      }
    }
    return;
  }
  const DeviceBackend& backend = backend_for("ssm::copy: cannot copy", src.device().is_cpu() ? dst.device() : src.device());
  if (src.is_contiguous() && dst.is_contiguous()) {
    backend.copy(dst.data(), dst.device(), src.data(), src.device(), src.nbytes());
    return;
  }
  if (src.numel() == 0) return;
  // Strided views: the trailing dims contiguous in both views make one row of `width` elements (one element when
  // the last dim is strided); the dim before them gives the rows of one 2D copy (their pitches from its strides);
  // each index of the dims before that is one 2D copy (a narrow along dim 1 of a KV cache: one copy; a (b, l, h, d)
  // view padded after every head: b · l copies of h rows; a column of a matrix: one copy of one-element rows).
  const int r = src.rank();
  int inner = r;      // dims [inner, r) are contiguous in both views
  index_t width = 1;  // elements of one row: the product of their sizes
  while (inner > 0) {
    const int k = inner - 1;
    if (src.size(k) != 1 && (src.stride(k) != width || dst.stride(k) != width)) break;
    width *= src.size(k);
    --inner;
  }
  const auto es = static_cast<index_t>(size_of(src.dtype()));
  const char* s0 = static_cast<const char*>(src.data());
  char* d0 = static_cast<char*>(dst.data());
  if (inner == 0) {  // contiguous up to dims of size 1
    backend.copy(d0, dst.device(), s0, src.device(), static_cast<std::size_t>(width * es));
    return;
  }
  // Rows along dim inner − 1, when both pitches hold a row (cudaMemcpy2D's rule); else one row per copy.
  const int row_dim = inner - 1;
  const bool rows_fit = src.stride(row_dim) >= width && dst.stride(row_dim) >= width;
  const int outer = rows_fit ? row_dim : inner;  // dims [0, outer) are looped over
  const index_t rows = rows_fit ? src.size(row_dim) : 1;
  const auto row_bytes = static_cast<std::size_t>(width * es);
  const std::size_t src_pitch = rows_fit ? static_cast<std::size_t>(src.stride(row_dim) * es) : row_bytes;
  const std::size_t dst_pitch = rows_fit ? static_cast<std::size_t>(dst.stride(row_dim) * es) : row_bytes;
  std::array<index_t, kMaxRank> idx{};
  index_t copies = 1;
  for (int k = 0; k < outer; ++k) copies *= src.size(k);
  for (index_t c = 0; c < copies; ++c) {
    index_t so = 0, dof = 0;
    for (int k = 0; k < outer; ++k) {
      so += idx[static_cast<std::size_t>(k)] * src.stride(k);
      dof += idx[static_cast<std::size_t>(k)] * dst.stride(k);
    }
    backend.copy_2d(d0 + dof * es, dst_pitch, dst.device(), s0 + so * es, src_pitch, src.device(), row_bytes,
                    static_cast<std::size_t>(rows));
    for (int k = outer - 1; k >= 0; --k) {
      if (++idx[static_cast<std::size_t>(k)] < src.size(k)) break;
      idx[static_cast<std::size_t>(k)] = 0;
    }
  }
}

inline Tensor Tensor::zeros(const Dims& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (t.nbytes() == 0) return t;
  if (device.is_cpu()) {
    std::fill_n(static_cast<char*>(t.data()), t.nbytes(), char{0});
  } else {
    backend_for("ssm::Tensor::zeros", device).memset_zero(t.data(), device, t.nbytes());
  }
  return t;
}

inline Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape(), dtype(), device);
  if (this->device().is_cpu() && !device.is_cpu() && !view_.is_contiguous()) {
    copy(t.view_, to(Device::cpu()).view_);  // gather on the host first
  } else {
    copy(t.view_, view_);
  }
  return t;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  SSM_CHECK(dtype() == dtype_of<T>(), "ssm::Tensor::to_vector: tensor has dtype ", name(dtype()), ", requested ",
            name(dtype_of<T>()));
  Tensor host = to(Device::cpu());
  const T* p = host.view_.data_as<T>();
  return std::vector<T>(p, p + numel());
}

}  // namespace ssm
