// The launch logic of the embedding gather, written once over an executor (`exec.launch(kernel, grid, block,
// args...)`; embedding_launches also `exec.download(host, src, bytes)`): limits, grid and the (ids, table) dtype
// dispatch. ssm::cuda runs it on a stream (cuda/src/embedding.cu), the host emulation with emu::HostExecutor
// (cuda/emu/backend_entries.hpp).
#pragma once

#include <cstdint>
#include <vector>

#include "../embedding.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

/// The gather alone, for ids already checked against the table (the device Mamba LM checks them on the host).
template <class Exec>
void embedding_gather_launches(Exec& exec, const EmbeddingParams& p, const char* op) {
  SSM_CHECK(p.ids_dtype == DType::i32 || p.ids_dtype == DType::i64, op, ": ids must be i32 or i64, got ",
            name(p.ids_dtype));
  SSM_CHECK(p.table_dtype == DType::f32 || p.table_dtype == DType::f64 || p.table_dtype == DType::f16 ||
                p.table_dtype == DType::bf16,
            op, ": the table must be f32, f64, f16 or bf16 on CUDA, got ", name(p.table_dtype));
  const DType y_dtype = compute_dtype(p.table_dtype);  // the ops' one input-to-compute rule (core/dtype.hpp)
  SSM_CHECK(p.dtype == y_dtype, op, ": y must be ", name(y_dtype), " for a ", name(p.table_dtype), " table, got ",
            name(p.dtype));
  SSM_CHECK(p.rows >= 0 && p.rows <= 0x7fffffff && p.vocab >= 0 && p.dim >= 0, op,
            ": rows must be in [0, 2^31), vocab and dim >= 0, got rows = ", p.rows, ", vocab = ", p.vocab,
            ", dim = ", p.dim);
  if (p.rows == 0 || p.dim == 0) return;
  SSM_CHECK(p.ids && p.table && p.y, op, ": ids, table and y must be set");
  const LaunchDims grid{static_cast<unsigned>(p.rows)}, block{static_cast<unsigned>(kEmbeddingThreads)};
  auto with_table = [&](auto id) {
    using Id = decltype(id);
    switch (p.table_dtype) {
      case DType::f32: exec.launch(embedding_gather_kernel<Id, float, float>, grid, block, p); break;
      case DType::f64: exec.launch(embedding_gather_kernel<Id, double, double>, grid, block, p); break;
      case DType::f16: exec.launch(embedding_gather_kernel<Id, ::ssm::half, float>, grid, block, p); break;
      default: exec.launch(embedding_gather_kernel<Id, ::ssm::bfloat16, float>, grid, block, p); break;
    }
  };
  if (p.ids_dtype == DType::i32) with_table(std::int32_t{});
  else with_table(std::int64_t{});
}

/// The op's entry: the ids are copied to the host and checked against [0, vocab) first (an ssm::Error naming
/// 'ids', as on the CPU), then gathered. The copy waits for the executor's stream: the one entry point of the
/// dense ops that synchronizes (a row per token, so rows · 8 bytes).
template <class Exec>
void embedding_launches(Exec& exec, const EmbeddingParams& p, const char* op) {
  if (p.rows > 0 && p.dim > 0 && p.ids != nullptr &&
      (p.ids_dtype == DType::i32 || p.ids_dtype == DType::i64)) {
    const std::size_t bytes = static_cast<std::size_t>(p.rows) * size_of(p.ids_dtype);
    std::vector<std::int64_t> host(static_cast<std::size_t>(p.rows));
    exec.download(host.data(), p.ids, bytes);
    if (p.ids_dtype == DType::i32) {  // widen in place, from the end
      const auto* narrow = reinterpret_cast<const std::int32_t*>(host.data());
      for (std::size_t r = host.size(); r-- > 0;) host[r] = narrow[r];
    }
    for (std::size_t r = 0; r < host.size(); ++r)
      SSM_CHECK(host[r] >= 0 && host[r] < p.vocab, op, ": argument 'ids': token id ", host[r], " at position ", r,
                " is outside [0, ", p.vocab, ") (the table's rows)");
  }
  embedding_gather_launches(exec, p, op);
}

}  // namespace ssm::kernels
