// The cross_entropy op: the language-model loss fused with its gradient, as a training step wants it. For logits
// (rows, vocab) and integer targets (rows), rows whose target is ignore_index left out:
//   loss = (1 / count) Σ_r [logsumexp(logits_r) − logits_r[t_r]]                        (PyTorch's F.cross_entropy)
//   grad_logits_r = grad_scale · (softmax(logits_r) − onehot(t_r)) / count              zero for ignored rows
// The gradient may overwrite the logits (in place: no second (rows, vocab) buffer). CPU tensors: cpu/cross_entropy.hpp,
// or the reference in double on request. CUDA tensors: the backend's cross_entropy entry, an ssm::Error while it is
// not implemented there. A target outside [0, vocab) that is not ignore_index is an ssm::Error naming 'targets'.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/backend.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/cross_entropy.hpp"
#include "ssm/reference/cross_entropy.hpp"

namespace ssm {

struct CrossEntropyInputs {
  TensorView logits{};              // (rows, vocab) f32 | f64, unit stride along vocab
  TensorView targets{};             // (rows) i32 | i64 contiguous, each in [0, vocab) or ignore_index
  std::int64_t ignore_index = -100;  // PyTorch's default
};

struct CrossEntropyOptions {
  double grad_scale = 1.0;  // finite: multiplies the gradient (loss scaling, 1 / accumulation steps)
  enum class Path { automatic, reference } path = Path::automatic;
  int threads = 0;  // CPU threads (0: by the amount of work)
};

struct CrossEntropyResult {
  double loss = 0;         // the mean over counted rows (0 when none is counted)
  std::int64_t count = 0;  // rows whose target is not ignore_index
  std::string path;        // "cpu", "reference" or "cuda"
};

/// The mean loss, and ∂(grad_scale · loss)/∂logits into grad_logits when given ((rows, vocab), logits' dtype and
/// device, unit stride along vocab; it may be the logits themselves). With no row counted, the loss is 0 and the
/// gradient zero.
inline CrossEntropyResult cross_entropy(const CrossEntropyInputs& in,
                                        const std::optional<TensorView>& grad_logits = std::nullopt,
                                        const CrossEntropyOptions& opt = {}) {
  Checker c("cross_entropy");
  c.defined("logits", in.logits).rank("logits", in.logits, 2).defined("targets", in.targets);
  const Device device = dispatch_device(c, {{"logits", in.logits}, {"targets", in.targets}});
  c.dtype_in("logits", in.logits, {DType::f32, DType::f64}).unit_stride("logits", in.logits, 1);
  const index_t rows = in.logits.size(0), vocab = in.logits.size(1);
  c.require(vocab >= 1 || rows == 0, "logits", "expected a vocabulary of at least one entry, got shape ",
            in.logits.shape().str());
  c.require(rows <= 1 || in.logits.stride(0) >= vocab, "logits", "rows must not overlap: expected a row stride >= ",
            vocab, ", got ", in.logits.stride(0));
  c.dtype_in("targets", in.targets, {DType::i32, DType::i64}).shape("targets", in.targets, {rows});
  c.contiguous("targets", in.targets);
  c.finite("grad_scale", opt.grad_scale);
  CrossEntropyParams p;
  p.rows = rows, p.vocab = vocab, p.dtype = in.logits.dtype();
  p.logits = in.logits.data(), p.logits_row_stride = in.logits.stride(0);
  p.targets = in.targets.data(), p.target_dtype = in.targets.dtype(), p.ignore_index = in.ignore_index;
  p.grad_scale = opt.grad_scale;
  if (grad_logits) {
    const TensorView& g = *grad_logits;
    c.defined("grad_logits", g).same_dtype("grad_logits", g, "logits", in.logits).shape("grad_logits", g, {rows, vocab});
    c.unit_stride("grad_logits", g, 1).device("grad_logits", g, device);
    c.require(rows <= 1 || g.stride(0) >= vocab, "grad_logits", "rows must not overlap: expected a row stride >= ",
              vocab, ", got ", g.stride(0));
    // In place is the logits' own elements, row for row; any other overlap would read logits already overwritten.
    // (Both row strides are >= vocab here, so each tensor spans [data, data + ((rows − 1) stride + vocab) elements).)
    const std::uintptr_t es = size_of(p.dtype);
    auto span = [&](const TensorView& t) {  // [first byte, one past the last) of the elements, rows >= 1
      const auto a = reinterpret_cast<std::uintptr_t>(t.data());
      return std::pair<std::uintptr_t, std::uintptr_t>(
          a, a + static_cast<std::uintptr_t>((rows - 1) * t.stride(0) + vocab) * es);
    };
    const bool same = g.data() == in.logits.data() && g.stride(0) == in.logits.stride(0);
    const bool empty = rows * vocab == 0;
    const auto [g0, g1] = empty ? std::pair<std::uintptr_t, std::uintptr_t>{} : span(g);
    const auto [l0, l1] = empty ? std::pair<std::uintptr_t, std::uintptr_t>{} : span(in.logits);
    c.require(same || empty || g1 <= l0 || l1 <= g0, "grad_logits",
              "overlaps the logits without being them (the same data and row stride, ", in.logits.stride(0),
              "): pass the logits themselves to compute in place, or a separate buffer");
    p.grad_logits = g.data(), p.grad_row_stride = g.stride(0);
  }
  CrossEntropyResult r;
  if (device.is_cpu())
    for (index_t i = 0; i < rows; ++i) {
      const std::int64_t t = p.target(i);
      if (t == p.ignore_index) continue;
      c.require(t >= 0 && t < vocab, "targets", "target ", t, " at row ", i, " is outside [0, ", vocab,
                ") and is not ignore_index (", p.ignore_index, ")");
      ++r.count;
    }
  else
    r.count = -1;  // counted by the device entry
  p.count = r.count;
  std::vector<double> row_loss(static_cast<std::size_t>(rows));  // (rows) loss_r, summed in order below
  p.row_loss = row_loss.data();
  if (device.is_cuda()) {
    r.count = backend_entry(c.op(), device, &DeviceBackend::cross_entropy)(p, nullptr);
    r.path = "cuda";
  } else if (opt.path == CrossEntropyOptions::Path::reference) {
    if (r.count > 0 || grad_logits) reference::cross_entropy(p);
    r.path = "reference";
  } else {
    if (r.count > 0 || grad_logits) cpu::cross_entropy(p, opt.threads);
    r.path = "cpu";
  }
  double sum = 0;
  for (double v : row_loss) sum += v;
  r.loss = r.count > 0 ? sum / static_cast<double>(r.count) : 0.0;
  return r;
}

}  // namespace ssm
