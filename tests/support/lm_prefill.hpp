// The decoding-consistency check the language-model tests share (Mamba2LM, RwkvLM): for two sequences at once, a
// prefill then one step per token, and a prefill in two pieces (the second resuming the first's cache), give the
// parallel forward's logits at every position. Included by tests; the library never includes it.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "support/golden.hpp"

namespace ssm::test {

/// model (any CausalLM) over b = 2 sequences of l = 13 ids ((i·37 + 11) mod vocab), split after 5: prefill + steps
/// and a resumed prefill each within `tol` (normalized_error per position) of model.logits; `what` names the case.
/// Returns the cache after the steps (for checks of its size).
template <class LM>
typename LM::Cache expect_prefill_and_steps_equal_forward(const LM& model, double tol, const std::string& what) {
  const index_t b = 2, l = 13, split = 5, V = model.config().padded_vocab(), vocab = model.config().vocab_size;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * l));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i * 37 + 11) % vocab);
  const Tensor full = model.logits(TensorView::of(ids.data(), {b, l}));  // (b, l, V)
  auto row = [&](index_t bi, index_t t) { return full.data_as<float>() + (bi * l + t) * V; };
  // prefill of the first `split` tokens, then steps
  std::vector<std::int64_t> head(static_cast<std::size_t>(b * split));
  for (index_t bi = 0; bi < b; ++bi) std::copy_n(ids.begin() + bi * l, split, head.begin() + bi * split);
  typename LM::Cache cache;
  Tensor lg = model.prefill(TensorView::of(head.data(), {b, split}), cache);
  double err = 0;
  for (index_t bi = 0; bi < b; ++bi)
    err = std::max(err, normalized_error(lg.data_as<float>() + bi * V, row(bi, split - 1), static_cast<std::size_t>(V)));
  typename LM::Cache resumed = cache;  // a copy: for the prefill in pieces below
  for (index_t t = split; t < l; ++t) {
    const std::int64_t step_ids[2] = {ids[static_cast<std::size_t>(t)], ids[static_cast<std::size_t>(l + t)]};
    lg = model.step(std::span<const std::int64_t>(step_ids, 2), cache);
    for (index_t bi = 0; bi < b; ++bi)
      err = std::max(err, normalized_error(lg.data_as<float>() + bi * V, row(bi, t), static_cast<std::size_t>(V)));
  }
  EXPECT_LE(err, tol) << what << ": prefill + steps";
  // the rest as a second prefill resuming the cache
  std::vector<std::int64_t> tail(static_cast<std::size_t>(b * (l - split)));
  for (index_t bi = 0; bi < b; ++bi)
    std::copy_n(ids.begin() + bi * l + split, l - split, tail.begin() + bi * (l - split));
  lg = model.prefill(TensorView::of(tail.data(), {b, l - split}), resumed, /*resume=*/true);
  double err2 = 0;
  for (index_t bi = 0; bi < b; ++bi)
    err2 = std::max(err2, normalized_error(lg.data_as<float>() + bi * V, row(bi, l - 1), static_cast<std::size_t>(V)));
  EXPECT_LE(err2, tol) << what << ": a prefill in two pieces";
  EXPECT_EQ(resumed.seqlen, l) << what;
  return cache;
}

}  // namespace ssm::test
