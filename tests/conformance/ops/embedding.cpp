// embedding (ops/embedding.hpp): y[r] = table[ids[r]], converted to y's dtype (f64 for an f64 table, f32 otherwise).
// The CPU path and the CUDA gather against the op's reference: i32 and i64 ids (the first and the last row of the
// table among them, repeats), f64 / f32 / f16 / bf16 tables, one element, widths across the kernel's 128 threads, a
// strided y, no rows. Every value is a copy or an exact widening: the tolerance is zero.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/embedding.hpp"

namespace conformance {
namespace {

struct EmbeddingShape {
  index_t rows, vocab, dim;
  index_t pad;  // > 0: y with rows pad elements apart beyond dim
};

std::vector<Case> embedding_cases() {
  const EmbeddingShape shapes[] = {
      {1, 1, 1, 0},     // every size 1
      {7, 11, 37, 3},   // odd sizes, strided y
      {3, 4, 300, 0},   // wider than the block, ragged
      {0, 3, 5, 0},     // no rows
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(37);
  for (const EmbeddingShape& s : shapes) {
    for (DType ids_dt : {DType::i64, DType::i32}) {
      for (DType table_dt : {DType::f64, DType::f32, DType::f16, DType::bf16}) {
        Case c;
        c.name = "rows=" + std::to_string(s.rows) + " vocab=" + std::to_string(s.vocab) + " dim=" +
                 std::to_string(s.dim) + (s.pad ? " strided" : "") + " ids " + std::string(ssm::name(ids_dt)) +
                 " table " + std::string(ssm::name(table_dt));
        Tensor ids = Tensor::empty({s.rows}, ids_dt);  // (rows): 0, vocab - 1, then random (repeats)
        std::uniform_int_distribution<index_t> pick(0, s.vocab - 1);
        for (index_t r = 0; r < s.rows; ++r) {
          const index_t id = r == 0 ? 0 : (r == 1 ? s.vocab - 1 : pick(rng));
          if (ids_dt == DType::i64) ids.data_as<std::int64_t>()[r] = id;
          else ids.data_as<std::int32_t>()[r] = static_cast<std::int32_t>(id);
        }
        c.inputs.push_back(dense_arg("ids", ids));
        c.inputs.push_back(dense_arg("table", uniform(rng, {s.vocab, s.dim}, table_dt, -1, 1)));  // (vocab, dim)
        OutSpec y{"y", {s.rows, s.dim}, ssm::compute_dtype(table_dt)};  // (rows, dim)
        if (s.pad) y.strides = {s.dim + s.pad, 1};
        c.outputs.push_back(y);
        c.params = s;
        cases.push_back(std::move(c));
      }
    }
  }
  return cases;
}

void embedding_forward(const Case&, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  const std::string path = ssm::embedding_into(in[0], in[1], out.views[0],
                                               reference ? ssm::EmbeddingPath::reference : ssm::EmbeddingPath::automatic);
  EXPECT_EQ(path, cfg.device.is_cuda() ? "cuda" : (reference ? "reference" : "cpu"));
}

void embedding_forward_reference(const Case&, const Views& in, const Views& out) {
  ssm::embedding_into(in[0], in[1], out[0], ssm::EmbeddingPath::reference);
}

std::string embedding_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// Copies and exact widenings (f16 / bf16 to f32): equal.
double embedding_tolerance(DType, Pass) { return 0.0; }

const Register reg{Op{"embedding", {"reference", "fast"}, true, embedding_cases, embedding_unsupported,
                      embedding_forward, nullptr, embedding_forward_reference, nullptr, embedding_tolerance}};

}  // namespace
}  // namespace conformance
