// ssm::Error, the one exception type of the library, and the helpers that build its messages.
// Every op validates its arguments at the top and throws ssm::Error naming the argument, the expected
// and the actual value; kernels after that assume valid input.
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ssm {

/// The exception thrown for bad input (shape, dtype, device, stride, hyperparameter), malformed files,
/// and unavailable backends. what() is a full sentence naming the operation and the argument.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  os.precision(17);
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

/// Throws ssm::Error with the streamed concatenation of args.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

/// Throws ssm::Error with the message when cond is false.
#define SSM_CHECK(cond, ...)                 \
  do {                                       \
    if (!(cond)) ::ssm::fail(__VA_ARGS__);   \
  } while (0)

/// Scalar hyperparameter checks: "op: argument 'name' must be finite and > 0, got nan".
inline void check_finite(const char* op, const char* name, double value) {
  SSM_CHECK(std::isfinite(value), op, ": argument '", name, "' must be finite, got ", value);
}
inline void check_positive(const char* op, const char* name, double value) {
  SSM_CHECK(std::isfinite(value) && value > 0, op, ": argument '", name, "' must be finite and > 0, got ",
            value);
}
inline void check_in_range(const char* op, const char* name, double value, double lo, double hi) {
  SSM_CHECK(std::isfinite(value) && value >= lo && value <= hi, op, ": argument '", name, "' must be in [", lo,
            ", ", hi, "], got ", value);
}

}  // namespace ssm
