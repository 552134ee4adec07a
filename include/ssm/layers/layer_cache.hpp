// The per-layer decoding cache of the recurrent blocks (MambaBlock, Mamba2Block): for b sequences, the last
// d_conv − 1 inputs of the causal conv and the SSM state, as tensors on the block's device. A value: copying it
// copies the tensors (to fork a sequence); moving it moves them. Its size does not depend on the context length.
// Each block names its shapes (MambaLayerCache, Mamba2LayerCache); the copy semantics and the checks live here once.
#pragma once

#include <cstddef>
#include <string>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm::layers {

struct ConvSsmCache {
  index_t b = 0;
  Tensor conv_state;  // (b, d_conv - 1, conv channels), oldest input first
  Tensor ssm_state;   // the block's state shape, b first

  ConvSsmCache() = default;
  ConvSsmCache(const ConvSsmCache& o) : b(o.b), conv_state(clone(o.conv_state)), ssm_state(clone(o.ssm_state)) {}
  ConvSsmCache& operator=(const ConvSsmCache& o) {
    if (this != &o) *this = ConvSsmCache(o);
    return *this;
  }
  ConvSsmCache(ConvSsmCache&&) noexcept = default;
  ConvSsmCache& operator=(ConvSsmCache&&) noexcept = default;
  ~ConvSsmCache() = default;

  std::size_t nbytes() const {
    return (conv_state.defined() ? conv_state.nbytes() : 0) + (ssm_state.defined() ? ssm_state.nbytes() : 0);
  }
  Device device() const { return conv_state.defined() ? conv_state.device() : Device::cpu(); }

  /// Whether both tensors are there, contiguous, of `dtype` on `device` with these shapes (b >= 1).
  bool matches(const Dims& conv_shape, const Dims& ssm_shape, DType dtype, Device device) const {
    auto fits = [&](const Tensor& t, const Dims& shape) {
      return t.defined() && t.dtype() == dtype && t.device() == device && t.view().is_contiguous() &&
             t.shape() == shape;
    };
    return b >= 1 && fits(conv_state, conv_shape) && fits(ssm_state, ssm_shape);
  }
  /// "(shape device)" of each tensor, for error messages.
  std::string describe() const {
    auto one = [](const Tensor& t) { return t.defined() ? t.shape().str() + " " + t.device().str() : std::string("empty"); };
    return "conv_state " + one(conv_state) + ", ssm_state " + one(ssm_state);
  }

 protected:
  void set_zeros(index_t batch, const Dims& conv_shape, const Dims& ssm_shape, DType dtype, Device device) {
    b = batch;
    conv_state = Tensor::zeros(conv_shape, dtype, device);
    ssm_state = Tensor::zeros(ssm_shape, dtype, device);
  }

 private:
  static Tensor clone(const Tensor& t) {
    if (!t.defined()) return t;
    Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
    copy(c.view(), t.view());
    return c;
  }
};

}  // namespace ssm::layers
