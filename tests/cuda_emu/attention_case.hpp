// One attention problem's sizes, shared by the kernel-level and the op-level emulated attention tests.
#pragma once

#include <cstdint>
#include <string>

namespace emu_test {

struct AttnCase {
  std::int64_t b = 1, l_q = 1, l_k = 1, h = 1, h_kv = 1, p = 16;
  bool causal = true;
  std::string str() const {
    return "b " + std::to_string(b) + " l_q " + std::to_string(l_q) + " l_k " + std::to_string(l_k) + " h " +
           std::to_string(h) + " h_kv " + std::to_string(h_kv) + " p " + std::to_string(p) +
           (causal ? " causal" : " full");
  }
};

}  // namespace emu_test
