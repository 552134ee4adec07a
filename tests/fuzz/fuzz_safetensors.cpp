// libFuzzer target for the safetensors reader (include/ssm/models/safetensors.hpp): any byte string
// must either parse, with every tensor readable inside the buffer, or throw ssm::Error. Built and run
// by tools/fuzz_safetensors.sh (clang++ -fsanitize=fuzzer,address,undefined); not part of the CMake build.
#include <cstdint>
#include <memory>

#include "ssm/models/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Copy into an exactly sized heap buffer so that ASan flags any read past the end.
  auto buf = std::shared_ptr<std::uint8_t[]>(new std::uint8_t[size > 0 ? size : 1]);
  if (size > 0) std::memcpy(buf.get(), data, size);
  try {
    auto f = ssm::safetensors::File::parse(std::shared_ptr<const void>(buf, buf.get()), buf.get(), size, "fuzz");
    volatile float sink = 0;
    for (const auto& e : f.entries()) {
      if (!e.dtype.has_value()) continue;
      ssm::Tensor t = f.tensor(e.name);
      const auto* p = static_cast<const unsigned char*>(t.data());
      for (std::size_t i = 0; i < t.nbytes(); ++i) sink = sink + static_cast<float>(p[i]);
      if (e.dtype == ssm::DType::f32 || e.dtype == ssm::DType::f16 || e.dtype == ssm::DType::bf16) {
        ssm::Tensor c = f.tensor_f32(e.name);
        if (c.numel() > 0) sink = sink + c.data_as<float>()[c.numel() - 1];
      }
    }
  } catch (const ssm::Error&) {
  }
  return 0;
}
