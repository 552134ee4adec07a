// ssm::Error, the one exception type of the library, and the helpers that build its messages.
// Every op validates its arguments at the top and throws ssm::Error naming the argument, the expected
// and the actual value; kernels after that assume valid input.
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace ssm {

/// The exception thrown for bad input (shape, dtype, device, stride, hyperparameter), malformed files,
/// and unavailable backends. what() is a full sentence naming the operation and the argument.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// A message under construction: what std::ostream would print for each piece, with 17 significant digits for
/// floating point. Its members are kept out of line, so that each call site's concat (a template per list of
/// argument types, thousands of them across the library's checks) is a short list of calls, not a stream each.
class Message {
 public:
  [[gnu::noinline]] Message() { os_.precision(17); }
  [[gnu::noinline]] void put(std::string_view s) { os_ << s; }
  [[gnu::noinline]] void put(const char* s) { os_ << (s != nullptr ? s : "(null)"); }
  [[gnu::noinline]] void put(long long v) { os_ << v; }
  [[gnu::noinline]] void put(unsigned long long v) { os_ << v; }
  [[gnu::noinline]] void put(double v) { os_ << v; }
  [[gnu::noinline]] void put(bool v) { os_ << v; }
  /// Any other streamable type (a character, a Device, a user's type): streamed here.
  template <class T>
  void put_other(const T& v) {
    os_ << v;
  }
  [[gnu::noinline]] std::string str() const { return os_.str(); }

 private:
  std::ostringstream os_;
};

/// Adds one argument to m by the overload that prints it as std::ostream does: integers widened, float as double
/// (as ostream does), strings as views; characters and everything else streamed as they are.
template <class T>
void put(Message& m, const T& v) {
  using U = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<U, bool>) m.put(v);
  else if constexpr (std::is_same_v<U, char> || std::is_same_v<U, signed char> || std::is_same_v<U, unsigned char>)
    m.put_other(v);
  else if constexpr (std::is_integral_v<U> && std::is_signed_v<U>) m.put(static_cast<long long>(v));
  else if constexpr (std::is_integral_v<U>) m.put(static_cast<unsigned long long>(v));
  else if constexpr (std::is_same_v<U, float> || std::is_same_v<U, double>) m.put(static_cast<double>(v));
  else if constexpr (std::is_convertible_v<const T&, const char*>) m.put(static_cast<const char*>(v));
  else if constexpr (std::is_convertible_v<const T&, std::string_view>) m.put(std::string_view(v));
  else m.put_other(v);
}

template <class... Args>
std::string concat(Args&&... args) {
  Message m;
  (put(m, args), ...);
  return m.str();
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
