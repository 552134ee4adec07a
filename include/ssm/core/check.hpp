// Argument validation for ops: a Checker names the op once, and each line checks one property of one
// argument, throwing ssm::Error with the op, the argument, the expected and the actual value:
//
//   Checker c("selective_scan");
//   c.floating("u", u).shape("u", u, {b, d, l}).same_device({{"u", u}, {"delta", delta}});
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm {

/// A named argument, for checks over several tensors.
struct NamedView {
  const char* name;
  const TensorView& view;
};

/// Wildcard extent for Checker::shape: any size is accepted in that dimension.
inline constexpr index_t kAny = -1;

class Checker {
 public:
  explicit Checker(std::string op) : op_(std::move(op)) {}

  const std::string& op() const { return op_; }

  /// Throws "op: argument 'name': message".
  template <class... Args>
  [[noreturn]] void fail_arg(const char* name, Args&&... args) const {
    ::ssm::fail(op_, ": argument '", name, "': ", std::forward<Args>(args)...);
  }
  template <class... Args>
  const Checker& require(bool cond, const char* name, Args&&... args) const {
    if (!cond) fail_arg(name, std::forward<Args>(args)...);
    return *this;
  }

  const Checker& defined(const char* name, const TensorView& t) const {
    return require(t.data() != nullptr || t.numel() == 0, name, "has no data (null pointer with ", t.numel(),
                   " elements)");
  }
  const Checker& rank(const char* name, const TensorView& t, int r) const {
    return require(t.rank() == r, name, "expected rank ", r, ", got rank ", t.rank(), " with shape ",
                   t.shape().str());
  }
  /// Exact shape, with kAny for dimensions that may take any size.
  const Checker& shape(const char* name, const TensorView& t, std::initializer_list<index_t> expected) const {
    bool ok = t.rank() == static_cast<int>(expected.size());
    int k = 0;
    for (index_t e : expected) {
      if (ok && e != kAny && t.size(k) != e) ok = false;
      ++k;
    }
    if (!ok) fail_arg(name, "expected shape ", format_expected(expected), ", got ", t.shape().str());
    return *this;
  }
  const Checker& dtype(const char* name, const TensorView& t, DType expected) const {
    return require(t.dtype() == expected, name, "expected dtype ", ssm::name(expected), ", got ",
                   ssm::name(t.dtype()));
  }
  const Checker& dtype_in(const char* name, const TensorView& t, std::initializer_list<DType> allowed) const {
    for (DType d : allowed)
      if (t.dtype() == d) return *this;
    std::string list;
    for (DType d : allowed) list += (list.empty() ? "" : ", ") + std::string(ssm::name(d));
    fail_arg(name, "expected dtype in {", list, "}, got ", ssm::name(t.dtype()));
  }
  const Checker& floating(const char* name, const TensorView& t) const {
    return dtype_in(name, t, {DType::f32, DType::f64, DType::f16, DType::bf16});
  }
  const Checker& same_dtype(const char* name, const TensorView& t, const char* ref_name,
                            const TensorView& ref) const {
    return require(t.dtype() == ref.dtype(), name, "expected dtype ", ssm::name(ref.dtype()), " (the dtype of '",
                   ref_name, "'), got ", ssm::name(t.dtype()));
  }
  const Checker& device(const char* name, const TensorView& t, Device expected) const {
    return require(t.device() == expected, name, "expected device ", expected.str(), ", got ",
                   t.device().str());
  }
  /// All given tensors on one device (mixed devices are an error, never a silent copy).
  const Checker& same_device(std::initializer_list<NamedView> args) const {
    const NamedView* first = nullptr;
    for (const NamedView& a : args) {
      if (!first) {
        first = &a;
        continue;
      }
      if (!(a.view.device() == first->view.device()))
        fail_arg(a.name, "is on ", a.view.device().str(), " but '", first->name, "' is on ",
                 first->view.device().str(), " (mixed devices: move the tensors to one device first)");
    }
    return *this;
  }
  /// Unit stride along dimension dim (e.g. the sequence dimension an op streams over).
  const Checker& unit_stride(const char* name, const TensorView& t, int dim) const {
    return require(t.size(dim) <= 1 || t.stride(dim) == 1, name, "expected stride 1 in dimension ", dim,
                   ", got strides ", t.strides().str(), " for shape ", t.shape().str());
  }
  const Checker& contiguous(const char* name, const TensorView& t) const {
    return require(t.is_contiguous(), name, "expected a contiguous tensor, got strides ", t.strides().str(),
                   " for shape ", t.shape().str());
  }
  /// t's memory (the bytes from its first to its last element) does not overlap other's, on one device: an op that
  /// reads `other` after writing `t` elsewhere (a convolution over time) cannot take them aliased. Conservative: two
  /// column slices of one buffer interleave their spans, so they count as overlapping.
  const Checker& disjoint(const char* name, const TensorView& t, const char* other_name,
                          const TensorView& other) const {
    auto span = [](const TensorView& v) {  // [first, last] byte addresses; empty for no elements
      std::intptr_t lo = reinterpret_cast<std::intptr_t>(v.data()), hi = lo;
      for (int i = 0; i < v.rank(); ++i) {
        const std::intptr_t ext = static_cast<std::intptr_t>((v.size(i) - 1) * v.stride(i) * size_of(v.dtype()));
        (ext < 0 ? lo : hi) += ext;
      }
      return std::pair<std::intptr_t, std::intptr_t>{lo, hi + static_cast<std::intptr_t>(size_of(v.dtype())) - 1};
    };
    if (t.numel() == 0 || other.numel() == 0 || !(t.device() == other.device())) return *this;
    const auto a = span(t), b = span(other);
    return require(a.second < b.first || b.second < a.first, name, "must not overlap '", other_name,
                   "' (the op reads it after writing elsewhere): pass a separate output");
  }
  /// No two elements of t share memory (an output written by several threads at once would race): with the dimensions
  /// of more than one element sorted by |stride|, each stride exceeds the span of the dimensions before it.
  const Checker& distinct_elements(const char* name, const TensorView& t) const {
    std::vector<std::pair<index_t, index_t>> dims;  // (|stride|, size) of the dimensions with size > 1
    for (int i = 0; i < t.rank(); ++i)
      if (t.size(i) > 1) dims.emplace_back(t.stride(i) < 0 ? -t.stride(i) : t.stride(i), t.size(i));
    std::sort(dims.begin(), dims.end());
    index_t span = 0;  // elements the dimensions so far reach past the first, in units
    for (const auto& [stride, size] : dims) {
      require(stride > span, name, "has elements sharing memory (strides ", t.strides().str(), " for shape ",
              t.shape().str(), "): an output needs one place per element");
      span += (size - 1) * stride;
    }
    return *this;
  }
  const Checker& finite(const char* name, double v) const {
    return require(std::isfinite(v), name, "must be finite, got ", v);
  }
  const Checker& positive(const char* name, double v) const {
    return require(std::isfinite(v) && v > 0, name, "must be finite and > 0, got ", v);
  }

  /// A packed batch's sequence boundaries (cu_seqlens, n_seqs + 1 entries, i32 | i64, on the CPU) for a batch of b
  /// rows of l steps: b == 1, starting at 0, strictly increasing, ending at l. Returns them as i64.
  std::vector<std::int64_t> cu_seqlens(const char* name, const TensorView& cs, index_t b, index_t l) const {
    defined(name, cs).rank(name, cs, 1).dtype_in(name, cs, {DType::i32, DType::i64});
    require(cs.device().is_cpu(), name, "expected a CPU tensor (its values are validated on the host), got ",
            cs.device().str());
    require(cs.size(0) >= 2, name, "expected at least 2 entries (n_seqs + 1 with n_seqs >= 1), got shape ",
            cs.shape().str());
    require(b == 1, name, "packed variable-length batches need b == 1 (sequences packed along l), got b = ", b);
    std::vector<std::int64_t> cu(static_cast<std::size_t>(cs.size(0)));
    for (index_t i = 0; i < cs.size(0); ++i)
      cu[static_cast<std::size_t>(i)] = cs.dtype() == DType::i32
                                            ? static_cast<std::int64_t>(cs.data_as<const std::int32_t>()[i * cs.stride(0)])
                                            : cs.data_as<const std::int64_t>()[i * cs.stride(0)];
    require(cu.front() == 0, name, "must start at 0, got ", cu.front());
    for (std::size_t i = 1; i < cu.size(); ++i)
      require(cu[i] > cu[i - 1], name, "must be strictly increasing, got ", cu[i - 1], " then ", cu[i], " at index ", i);
    require(cu.back() == l, name, "must end at l = ", l, ", got ", cu.back());
    return cu;
  }

 private:
  static std::string format_expected(std::initializer_list<index_t> e) {
    std::string s = "(";
    bool first = true;
    for (index_t v : e) {
      s += (first ? "" : ", ") + (v == kAny ? std::string("*") : std::to_string(v));
      first = false;
    }
    return s + ")";
  }

  std::string op_;
};

}  // namespace ssm
