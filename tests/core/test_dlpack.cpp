// DLPack interop: zero-copy round trips, the deleter runs exactly once, unsupported inputs are errors.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <string>

#include "ssm/core/dlpack.hpp"

namespace {

using ssm::DType;
using ssm::Tensor;

// A producer like PyTorch's: owns a buffer and counts deleter calls.
struct Producer {
  std::vector<float> buffer;
  std::int64_t shape[2] = {3, 4};
  std::int64_t strides[2] = {1, 3};  // column-major: a non-contiguous layout
  DLManagedTensor managed{};
  int* deletes = nullptr;
};

DLManagedTensor* make_producer(int* deletes) {
  auto* p = new Producer;
  p->buffer.resize(12);
  std::iota(p->buffer.begin(), p->buffer.end(), 0.0f);
  p->deletes = deletes;
  DLTensor& t = p->managed.dl_tensor;
  t.data = p->buffer.data();
  t.device = {kDLCPU, 0};
  t.ndim = 2;
  t.dtype = {kDLFloat, 32, 1};
  t.shape = p->shape;
  t.strides = p->strides;
  t.byte_offset = 0;
  p->managed.manager_ctx = p;
  p->managed.deleter = [](DLManagedTensor* self) {
    auto* prod = static_cast<Producer*>(self->manager_ctx);
    ++*prod->deletes;
    delete prod;
  };
  return &p->managed;
}

TEST(DLPack, ImportIsZeroCopyAndDeletesOnce) {
  int deletes = 0;
  DLManagedTensor* m = make_producer(&deletes);
  void* data = m->dl_tensor.data;
  {
    Tensor t = ssm::from_dlpack(m);
    EXPECT_EQ(t.data(), data);
    EXPECT_EQ(t.shape(), (ssm::Dims{3, 4}));
    EXPECT_EQ(t.strides(), (ssm::Dims{1, 3}));
    EXPECT_EQ((t.as<float, 2>("t")(2, 1)), 5.0f);  // column-major element (2, 1) = 2 + 1 * 3
    Tensor copy = t;
    EXPECT_EQ(deletes, 0);
  }
  EXPECT_EQ(deletes, 1);
}

TEST(DLPack, ExportReimportIsSameMemoryAndDeletesOnce) {
  Tensor t = Tensor::from_vector<double>({2, 3}, {1, 2, 3, 4, 5, 6});
  const void* data = t.data();
  DLManagedTensor* m = ssm::to_dlpack(t);
  EXPECT_EQ(t.use_count(), 2);  // the export keeps the storage alive
  EXPECT_EQ(m->dl_tensor.dtype.code, kDLFloat);
  EXPECT_EQ(m->dl_tensor.dtype.bits, 64);
  EXPECT_EQ(m->dl_tensor.device.device_type, kDLCPU);
  {
    Tensor back = ssm::from_dlpack(m);
    EXPECT_EQ(back.data(), data);
    EXPECT_EQ(back.dtype(), DType::f64);
    EXPECT_EQ(back.to_vector<double>(), t.to_vector<double>());
    EXPECT_EQ(t.use_count(), 2);
  }
  EXPECT_EQ(t.use_count(), 1);  // the deleter ran once and released its reference
}

TEST(DLPack, ExportOutlivesTheTensor) {
  DLManagedTensor* m = nullptr;
  {
    Tensor t = Tensor::from_vector<float>({4}, {1, 2, 3, 4});
    m = ssm::to_dlpack(t);
  }
  EXPECT_EQ(static_cast<float*>(m->dl_tensor.data)[3], 4.0f);  // ASan would flag a use after free
  m->deleter(m);
}

// Each dtype against DLPack's own type codes, written out here (the DLPack spec: code, bits, lanes), both on export
// and on import; a round trip alone would pass with any consistent pair of wrong mappings.
TEST(DLPack, DtypesAreDLPacksCodes) {
  struct Row {
    DType dtype;
    std::uint8_t code, bits;
  };
  const Row rows[] = {{DType::f16, kDLFloat, 16},    {DType::f32, kDLFloat, 32},     {DType::f64, kDLFloat, 64},
                      {DType::bf16, kDLBfloat, 16},  {DType::c64, kDLComplex, 64},   {DType::c128, kDLComplex, 128},
                      {DType::i32, kDLInt, 32},      {DType::i64, kDLInt, 64},       {DType::u8, kDLUInt, 8}};
  for (const Row& r : rows) {
    SCOPED_TRACE(std::string(ssm::name(r.dtype)));
    Tensor t = Tensor::zeros({2}, r.dtype);
    DLManagedTensor* m = ssm::to_dlpack(t);
    EXPECT_EQ(static_cast<int>(m->dl_tensor.dtype.code), static_cast<int>(r.code));  // ints: uint8_t prints as a char
    EXPECT_EQ(static_cast<int>(m->dl_tensor.dtype.bits), static_cast<int>(r.bits));
    EXPECT_EQ(static_cast<int>(m->dl_tensor.dtype.lanes), 1);
    m->deleter(m);

    float buf[8] = {};  // 32 bytes: two elements of the widest type
    std::int64_t shape[1] = {2};
    DLTensor in{};
    in.data = buf;
    in.device = {kDLCPU, 0};
    in.ndim = 1;
    in.dtype = {r.code, r.bits, 1};
    in.shape = shape;
    EXPECT_EQ(ssm::view_of(in).dtype(), r.dtype);
  }
}

// DLPack dtypes with no ssm counterpart are an ssm::Error that names what was wrong with the argument.
TEST(DLPack, UnsupportedDtypesAreErrorsNamingTheDtype) {
  struct Row {
    DLDataType dtype;
    const char* message;
  };
  const Row rows[] = {
      {{kDLFloat, 32, 2}, "from_dlpack: vector dtypes (lanes = 2) are not supported"},
      {{kDLFloat, 32, 0}, "from_dlpack: vector dtypes (lanes = 0) are not supported"},
      {{kDLFloat, 8, 1}, "from_dlpack: unsupported DLPack dtype (code 2, bits 8)"},
      {{kDLBfloat, 32, 1}, "from_dlpack: unsupported DLPack dtype (code 4, bits 32)"},
      {{kDLInt, 8, 1}, "from_dlpack: unsupported DLPack dtype (code 0, bits 8)"},
      {{kDLUInt, 32, 1}, "from_dlpack: unsupported DLPack dtype (code 1, bits 32)"},
      {{kDLComplex, 32, 1}, "from_dlpack: unsupported DLPack dtype (code 5, bits 32)"},
      {{kDLOpaqueHandle, 64, 1}, "from_dlpack: unsupported DLPack dtype (code 3, bits 64)"},
      // kDLBool (DLPack >= 0.8; written as its number: the DLPack 0.6 header this also builds with lacks the name).
      {{6, 8, 1}, "from_dlpack: unsupported DLPack dtype (code 6, bits 8)"},
  };
  for (const Row& r : rows) {
    float buf[4] = {};
    std::int64_t shape[1] = {1};
    DLTensor in{};
    in.data = buf;
    in.device = {kDLCPU, 0};
    in.ndim = 1;
    in.dtype = r.dtype;
    in.shape = shape;
    try {
      (void)ssm::view_of(in);
      ADD_FAILURE() << "accepted " << r.message;
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(r.message), std::string::npos) << e.what();
    }
  }
}

TEST(DLPack, ByteOffsetIsApplied) {
  std::vector<float> buf = {0, 1, 2, 3, 4, 5};
  std::int64_t shape[1] = {2};
  DLTensor t{};
  t.data = buf.data();
  t.device = {kDLCPU, 0};
  t.ndim = 1;
  t.dtype = {kDLFloat, 32, 1};
  t.shape = shape;
  t.strides = nullptr;
  t.byte_offset = 3 * sizeof(float);
  auto v = ssm::view_of(t).as<float, 1>("t");
  EXPECT_EQ(v(0), 3.0f);
  EXPECT_EQ(v(1), 4.0f);
}

TEST(DLPack, UnsupportedInputsAreErrorsAndKeepOwnership) {
  int deletes = 0;
  DLManagedTensor* m = make_producer(&deletes);
  m->dl_tensor.dtype = {kDLFloat, 8, 1};
  EXPECT_THROW(ssm::from_dlpack(m), ssm::Error);
  m->dl_tensor.dtype = {kDLFloat, 32, 4};
  EXPECT_THROW(ssm::from_dlpack(m), ssm::Error);
  m->dl_tensor.dtype = {kDLFloat, 32, 1};
  m->dl_tensor.device = {kDLVulkan, 0};
  EXPECT_THROW(ssm::from_dlpack(m), ssm::Error);
  m->dl_tensor.device = {kDLCPU, 0};
  m->dl_tensor.ndim = 9;
  EXPECT_THROW(ssm::from_dlpack(m), ssm::Error);
  EXPECT_EQ(deletes, 0);  // a failed import leaves ownership with the caller
  m->dl_tensor.ndim = 2;
  void* data = m->dl_tensor.data;
  m->dl_tensor.data = nullptr;
  EXPECT_THROW(ssm::from_dlpack(m), ssm::Error);  // null data with elements
  m->dl_tensor.data = data;
  EXPECT_EQ(deletes, 0);
  m->deleter(m);
  EXPECT_EQ(deletes, 1);
  EXPECT_THROW(ssm::from_dlpack(nullptr), ssm::Error);
}

TEST(DLPack, CudaDeviceIsPreserved) {
  float dummy = 0;
  std::int64_t shape[1] = {1};
  DLTensor t{};
  t.data = &dummy;
  t.device = {kDLCUDA, 3};
  t.ndim = 1;
  t.dtype = {kDLBfloat, 16, 1};
  t.shape = shape;
  const ssm::TensorView v = ssm::view_of(t);
  EXPECT_EQ(v.device(), ssm::Device::cuda(3));
  EXPECT_EQ(v.dtype(), DType::bf16);
}

}  // namespace
