// Zero-copy interchange with DLPack (the format of PyTorch, JAX, CuPy): import a DLManagedTensor as an
// ssm::Tensor that calls the producer's deleter exactly once, when its last copy goes away; export an
// ssm::Tensor as a DLManagedTensor that keeps the storage alive until the consumer calls its deleter.
#pragma once

#include <dlpack/dlpack.h>

#include <memory>
#include <vector>

#include "ssm/core/tensor.hpp"

namespace ssm {

namespace detail {
inline DType dtype_from_dlpack(DLDataType t) {
  SSM_CHECK(t.lanes == 1, "from_dlpack: vector dtypes (lanes = ", static_cast<int>(t.lanes), ") are not supported");
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 32) return DType::f32;
      if (t.bits == 64) return DType::f64;
      if (t.bits == 16) return DType::f16;
      break;
    case kDLBfloat:
      if (t.bits == 16) return DType::bf16;
      break;
    case kDLComplex:
      if (t.bits == 64) return DType::c64;
      if (t.bits == 128) return DType::c128;
      break;
    case kDLInt:
      if (t.bits == 32) return DType::i32;
      if (t.bits == 64) return DType::i64;
      break;
    case kDLUInt:
      if (t.bits == 8) return DType::u8;
      break;
    default: break;
  }
  fail("from_dlpack: unsupported DLPack dtype (code ", static_cast<int>(t.code), ", bits ", static_cast<int>(t.bits),
       "); supported: float16/32/64, bfloat16, complex64/128, int32/64, uint8");
}

inline DLDataType dtype_to_dlpack(DType d) {
  DLDataType t;
  t.lanes = 1;
  t.bits = static_cast<std::uint8_t>(size_of(d) * 8);
  switch (d) {
    case DType::f32:
    case DType::f64:
    case DType::f16: t.code = kDLFloat; break;
    case DType::bf16: t.code = kDLBfloat; break;
    case DType::c64:
    case DType::c128: t.code = kDLComplex; break;
    case DType::i32:
    case DType::i64: t.code = kDLInt; break;
    case DType::u8: t.code = kDLUInt; break;
  }
  return t;
}

inline Device device_from_dlpack(DLDevice d) {
  switch (d.device_type) {
    case kDLCPU: return Device::cpu();
    case kDLCUDA: return Device::cuda(d.device_id);
    default:
      fail("from_dlpack: unsupported DLPack device type ", static_cast<int>(d.device_type),
           "; supported: kDLCPU (1) and kDLCUDA (2)");
  }
}

/// What an exported DLManagedTensor points at: the tensor (keeping the storage alive) and the arrays.
struct DLPackExport {
  DLManagedTensor managed{};
  Tensor tensor;
  std::vector<std::int64_t> shape, strides;
};
}  // namespace detail

/// A non-owning view of a DLTensor (byte_offset applied; null strides mean row-major).
inline TensorView view_of(const DLTensor& t) {
  SSM_CHECK(t.ndim >= 0 && t.ndim <= kMaxRank, "from_dlpack: rank ", t.ndim, " is outside [0, ", kMaxRank, "]");
  SSM_CHECK(t.ndim == 0 || t.shape != nullptr, "from_dlpack: null shape for rank ", t.ndim);
  const DType dtype = detail::dtype_from_dlpack(t.dtype);
  const Dims shape(std::span<const index_t>(t.shape, static_cast<std::size_t>(t.ndim)));
  SSM_CHECK(t.data != nullptr || shape.product() == 0, "from_dlpack: null data for shape ", shape.str());
  const Dims strides = t.strides ? Dims(std::span<const index_t>(t.strides, static_cast<std::size_t>(t.ndim)))
                                 : contiguous_strides(shape);
  return TensorView(static_cast<char*>(t.data) + t.byte_offset, dtype, detail::device_from_dlpack(t.device), shape,
                    strides);
}

/// Imports a DLManagedTensor without copying. The returned Tensor owns it: the producer's deleter runs
/// exactly once, when the last copy of the Tensor is destroyed. On error the deleter is not called and
/// ownership stays with the caller.
inline Tensor from_dlpack(DLManagedTensor* managed) {
  SSM_CHECK(managed != nullptr, "from_dlpack: null DLManagedTensor");
  const TensorView view = view_of(managed->dl_tensor);
  std::shared_ptr<void> owner(managed, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter) m->deleter(m);
  });
  return Tensor::adopt(view, std::move(owner));
}

/// Exports a tensor without copying. The DLManagedTensor shares the storage; the consumer must call its
/// deleter exactly once (PyTorch's from_dlpack does).
inline DLManagedTensor* to_dlpack(const Tensor& tensor) {
  SSM_CHECK(tensor.defined(), "to_dlpack: the tensor is empty (no storage)");
  auto* ex = new detail::DLPackExport;
  ex->tensor = tensor;
  ex->shape.assign(tensor.shape().begin(), tensor.shape().end());
  ex->strides.assign(tensor.strides().begin(), tensor.strides().end());
  DLTensor& t = ex->managed.dl_tensor;
  t.data = tensor.data();
  t.device.device_type = tensor.device().is_cpu() ? kDLCPU : kDLCUDA;
  t.device.device_id = tensor.device().is_cpu() ? 0 : tensor.device().index;
  t.ndim = tensor.rank();
  t.dtype = detail::dtype_to_dlpack(tensor.dtype());
  t.shape = ex->shape.data();
  t.strides = ex->strides.data();
  t.byte_offset = 0;
  ex->managed.manager_ctx = ex;
  ex->managed.deleter = [](DLManagedTensor* self) { delete static_cast<detail::DLPackExport*>(self->manager_ctx); };
  return &ex->managed;
}

}  // namespace ssm
