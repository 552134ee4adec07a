// Reading a Hugging Face checkpoint directory, for every language model: config.json (parsed, and its fields read
// with their type checked: ConfigFields), the weights (model.safetensors or the shards of
// model.safetensors.index.json: open_weights), and the tensors (CheckpointReader: take a tensor after checking its
// shape and dtype, keep a big matrix in its stored dtype or the one LoadOptions asks for, reject the tensors no
// parameter took). Errors are ssm::Errors prefixed with the loading model's operation ("MambaLM::load").
#pragma once

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/models/safetensors.hpp"

namespace ssm::models {

/// Options of a model's load / from_checkpoint.
struct LoadOptions {
  /// The dtype the big matrices (embedding, lm_head and the blocks' projections) are held in: f32, f16 or bf16.
  /// Unset (the default): each matrix keeps the dtype it has in the checkpoint (F64 becomes f32); a 16-bit matrix
  /// stored aligned is then a zero-copy view of the memory-mapped file. f32: every weight converted to f32 (what
  /// backward / training needs). The norms, conv, biases, A_log and D are always f32; computation is f32 throughout
  /// (16-bit weights are converted inside the products).
  std::optional<DType> weight_dtype;
};

/// The parsed config.json of checkpoint directory `dir`; op names the caller in errors ("MambaLM::load").
inline nlohmann::json read_config_json(const std::string& dir, const std::string& op) {
  namespace fs = std::filesystem;
  const fs::path path = fs::path(dir) / "config.json";
  SSM_CHECK(fs::is_regular_file(path), op, ": '", path.string(), "' not found");
  std::ifstream is(path);
  nlohmann::json j = nlohmann::json::parse(is, nullptr, /*allow_exceptions=*/false);
  SSM_CHECK(!j.is_discarded(), op, ": '", path.string(), "' is not valid JSON");
  return j;
}

/// The weights of a checkpoint directory: model.safetensors, else the shards of model.safetensors.index.json (as
/// transformers prefers them). Throws ssm::Error when neither is there, explaining a PyTorch pickle.
inline safetensors::Checkpoint open_weights(const std::string& dir, const std::string& op) {
  namespace fs = std::filesystem;
  const fs::path single = fs::path(dir) / "model.safetensors", index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::is_regular_file(single)) return safetensors::Checkpoint(safetensors::File::open(single.string()));
  if (fs::is_regular_file(index)) return safetensors::Checkpoint::open_index(index.string());
  for (const char* bin : {"pytorch_model.bin", "pytorch_model.bin.index.json"})
    SSM_CHECK(!fs::exists(fs::path(dir) / bin), op, ": '", dir, "' holds '", bin,
              "', a PyTorch pickle checkpoint, which this library does not read (unpickling can run arbitrary code). "
              "Convert it to safetensors with transformers: python -c \"from transformers import "
              "AutoModelForCausalLM as M; M.from_pretrained('", dir, "').save_pretrained('OUT', "
              "safe_serialization=True)\" and load OUT (docs/checkpoints.md)");
  fail(op, ": '", dir, "' has no weights: '", single.string(), "' not found, nor '", index.string(),
       "' (a sharded checkpoint)");
}

/// Typed fields of a config.json object (or of a nested object such as mamba_ssm's ssm_cfg): a present field of
/// the wrong type is an ssm::Error naming it ("<op>: <where> 'key' must be ...").
class ConfigFields {
 public:
  ConfigFields(const nlohmann::json& j, std::string op, std::string where = "field")
      : j_(j), op_(std::move(op)), where_(std::move(where)) {}

  /// The first of `keys` present, as an integer into out; false when none is (an error when required).
  bool get_int(std::initializer_list<const char*> keys, index_t& out, bool required = false) const {
    for (const char* k : keys)
      if (j_.contains(k)) {
        SSM_CHECK(j_[k].is_number_integer(), op_, ": ", where_, " '", k, "' must be an integer, got ", j_[k].dump());
        out = j_[k].get<index_t>();
        return true;
      }
    SSM_CHECK(!required, op_, ": config.json lacks '", *keys.begin(), "'");
    return false;
  }
  bool get_bool(const char* k, bool& out) const {
    if (!j_.contains(k)) return false;
    SSM_CHECK(j_[k].is_boolean(), op_, ": ", where_, " '", k, "' must be a boolean, got ", j_[k].dump());
    out = j_[k].get<bool>();
    return true;
  }
  bool get_number(const char* k, double& out) const {
    if (!j_.contains(k)) return false;
    SSM_CHECK(j_[k].is_number(), op_, ": ", where_, " '", k, "' must be a number, got ", j_[k].dump());
    out = j_[k].get<double>();
    return true;
  }
  /// eos_token_id: an integer, a list of them, null or absent (none).
  std::vector<std::int64_t> eos_token_ids() const {
    std::vector<std::int64_t> ids;
    if (!j_.contains("eos_token_id") || j_["eos_token_id"].is_null()) return ids;
    const auto& e = j_["eos_token_id"];
    auto add = [&](const nlohmann::json& v) {
      SSM_CHECK(v.is_number_integer(), op_, ": eos_token_id must be an integer or a list of integers, got ", e.dump());
      ids.push_back(v.get<std::int64_t>());
    };
    if (e.is_array())
      for (const auto& v : e) add(v);
    else
      add(e);
    return ids;
  }
  /// hidden_act, when present, must be "silu" (the only activation the blocks compute).
  void require_silu() const {
    if (j_.contains("hidden_act"))
      SSM_CHECK(j_["hidden_act"] == "silu", op_, ": only hidden_act \"silu\" is supported, got ",
                j_["hidden_act"].dump());
  }

 private:
  const nlohmann::json& j_;
  std::string op_, where_;
};

/// Takes the tensors of a checkpoint one by one, checking each against the shape the config needs and keeping
/// the names taken, so that finish() can reject every tensor no parameter took.
class CheckpointReader {
 public:
  /// op names the loading model in errors ("MambaLM::load"); opt.weight_dtype, when set, must be f32, f16 or bf16.
  CheckpointReader(const safetensors::Checkpoint& f, std::string op, const LoadOptions& opt)
      : f_(f), op_(std::move(op)), opt_(opt) {
    if (opt_.weight_dtype) layers::WeightMatrix::check_dtype((op_ + ": LoadOptions::weight_dtype").c_str(), *opt_.weight_dtype);
  }

  bool contains(const std::string& name) const { return f_.contains(name); }

  /// Throws unless the checkpoint holds `name` with `shape` and a floating dtype; marks it taken.
  void check(const std::string& name, const Dims& shape) {
    SSM_CHECK(f_.contains(name), op_, ": '", f_.source(), "' lacks tensor '", name, "'");
    const auto& e = f_.entry(name);
    SSM_CHECK(e.shape == shape, op_, ": tensor '", name, "' has shape ", e.shape.str(), ", the config needs ",
              shape.str());
    SSM_CHECK(e.dtype == DType::f32 || e.dtype == DType::f16 || e.dtype == DType::bf16 || e.dtype == DType::f64, op_,
              ": tensor '", name, "' has dtype ", e.dtype_str, ", expected F32, F16, BF16 or F64");
    used_.insert(name);
  }

  /// The tensor `name` (shape) converted to f32 into dst.
  void take(const std::string& name, const Dims& shape, std::vector<float>& dst) {
    check(name, shape);
    dst = f_.tensor_f32(name).to_vector<float>();
  }

  /// The dtype a matrix is held in: LoadOptions::weight_dtype, else the stored one (F64: f32).
  DType matrix_dtype(const std::string& name) const {
    if (opt_.weight_dtype) return *opt_.weight_dtype;
    const auto stored = f_.contains(name) ? f_.entry(name).dtype : std::nullopt;
    return stored == DType::f16 || stored == DType::bf16 ? *stored : DType::f32;
  }

  /// The matrix `name` (shape (rows, cols)) in `dtype`: the file's bytes when the dtype is kept (a view of the
  /// mapping when aligned, see safetensors::File::tensor), else converted through f32.
  layers::WeightMatrix take_matrix(const std::string& name, const Dims& shape, DType dtype) {
    check(name, shape);
    if (f_.entry(name).dtype == dtype) return layers::WeightMatrix(f_.file_of(name).tensor(name));
    Tensor t = f_.tensor_f32(name);
    if (dtype == DType::f32) return layers::WeightMatrix(std::move(t));
    return layers::WeightMatrix::from_f32(t.data_as<float>(), shape[0], shape[1], dtype);
  }
  /// take_matrix in matrix_dtype(name).
  layers::WeightMatrix take_matrix(const std::string& name, const Dims& shape) {
    return take_matrix(name, shape, matrix_dtype(name));
  }

  /// A block's parameter `name` (shape): into *slot as a weight matrix when the block may hold it as one (slot not
  /// null, a projection) and it is kept in f16 / bf16 (matrix_dtype); else into dst as f32 values, so that f32
  /// projections stay parameter vectors, which a backward can train.
  void take_vector_or_matrix(const std::string& name, const Dims& shape, std::vector<float>& dst,
                             layers::WeightMatrix* slot) {
    const DType dt = matrix_dtype(name);
    if (slot != nullptr && dt != DType::f32)
      *slot = take_matrix(name, shape, dt);
    else
      take(name, shape, dst);
  }

  /// Throws for the first tensor of the checkpoint that nothing took ("not part of a <model> model with this
  /// config").
  void finish(const char* model) const {
    for (const auto& name : f_.names())
      SSM_CHECK(used_.count(name) != 0, op_, ": '", f_.file_of(name).source(), "' has unexpected tensor '", name,
                "' (not part of a ", model, " model with this config)");
  }

 private:
  const safetensors::Checkpoint& f_;
  std::string op_;
  LoadOptions opt_;
  std::set<std::string> used_;
};

}  // namespace ssm::models
