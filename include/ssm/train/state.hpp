// A training state on disk: the parameters, AdamW's moments and step count, and the data generator's random state, in
// one safetensors file, so that a resumed run continues bit for bit where the saved one stopped.
//
//   tensors   param.<name>, adamw.m.<name>, adamw.v.<name>   one of each per entry of the parameter tree, its dtype
//   metadata  ssm.format = "training-state", ssm.version = "1", adamw.step, rng (std::mt19937_64's text form),
//             params (the tree's names, one per line, in order), and the caller's own entries
//
// The file is written beside the target and renamed over it, so an interrupted save leaves the previous state
// whole. Loading checks everything before it writes anything: a file that is not a training state, a tree with other
// names, sizes or dtypes, a missing moment, a truncated or corrupt file, a malformed step or random state are each an
// ssm::Error, and the parameters, the optimizer and the generator are then left as they were.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/models/safetensors.hpp"
#include "ssm/train/adamw.hpp"
#include "ssm/train/param_tree.hpp"

namespace ssm::train {

inline constexpr const char* kTrainingStateFormat = "training-state";

/// Writes params, opt's step and moments, rng's state and `extra` metadata (keys not starting with "ssm.", "adamw."
/// or equal to "rng" / "params") to `path`.
template <class T>
void save_training_state(const std::string& path, const ParamTree<T>& params, const AdamW<T>& opt,
                         const std::mt19937_64& rng, const std::map<std::string, std::string>& extra = {}) {
  const Checker c("save_training_state");
  c.require(opt.moments().size() == params.size() || (opt.moments().empty() && (opt.steps() == 0 || params.size() == 0)),
            "opt", "holds moments for ", opt.moments().size(), " parameters after ", opt.steps(),
            " steps, the tree has ", params.size());
  std::vector<std::pair<std::string, TensorView>> tensors;
  std::string names;
  auto view = [](const std::vector<T>& v) { return TensorView::of(v.data(), {static_cast<index_t>(v.size())}); };
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& e = params.entries()[i];
    tensors.emplace_back("param." + e.name, view(*e.values));
    names += e.name + "\n";
    if (opt.moments().empty()) continue;
    const auto& mo = opt.moments()[i];
    c.require(mo.name == e.name && mo.m.size() == e.values->size() && mo.v.size() == e.values->size(), "opt", "entry ",
              i, " is '", mo.name, "' of ", mo.m.size(), " / ", mo.v.size(), " elements, the tree's '", e.name, "' of ",
              e.values->size());
    tensors.emplace_back("adamw.m." + e.name, view(mo.m));
    tensors.emplace_back("adamw.v." + e.name, view(mo.v));
  }
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : extra) {
    c.require(k.rfind("ssm.", 0) != 0 && k.rfind("adamw.", 0) != 0 && k != "rng" && k != "params", "extra",
              "key '", k, "' is reserved");
    meta[k] = v;
  }
  std::ostringstream rs;
  rs << rng;
  meta["ssm.format"] = kTrainingStateFormat, meta["ssm.version"] = "1";
  meta["adamw.step"] = std::to_string(opt.steps()), meta["rng"] = rs.str(), meta["params"] = names;
  const std::string bytes = safetensors::serialize(tensors, meta);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
    c.require(os.good(), "path", "cannot open '", tmp, "' for writing");
    os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    os.flush();
    c.require(os.good(), "path", "failed writing ", bytes.size(), " bytes to '", tmp, "'");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  c.require(!ec, "path", "cannot rename '", tmp, "' to '", path, "': ", ec.message());
}

/// Reads a state written by save_training_state into params (the same tree: names, sizes, order, T), opt (step and
/// moments) and rng; the caller's metadata into *extra when given. Everything is checked first (see the file's
/// comment); on an error nothing has changed.
template <class T>
void load_training_state(const std::string& path, ParamTree<T>& params, AdamW<T>& opt, std::mt19937_64& rng,
                         std::map<std::string, std::string>* extra = nullptr) {
  const Checker c("load_training_state");
  const safetensors::File f = safetensors::File::open(path);  // a truncated or malformed file throws here
  const auto& meta = f.metadata();
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(key);
    c.require(it != meta.end(), "path", "'", path, "' has no '", key, "' metadata: not a training state written by ssm");
    return it->second;
  };
  c.require(get("ssm.format") == kTrainingStateFormat, "path", "'", path, "' is a '", get("ssm.format"),
            "', not a training state");
  c.require(get("ssm.version") == "1", "path", "'", path, "' is training-state version ", get("ssm.version"),
            ", this library reads version 1");
  std::string names;
  for (const auto& e : params.entries()) names += e.name + "\n";
  c.require(get("params") == names, "params", "the file's parameters (", get("params"), ") are not the tree's (",
            names, ")");
  std::int64_t step = 0;
  {
    const std::string& s = get("adamw.step");
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
    c.require(!s.empty() && ec == std::errc() && end == s.data() + s.size() && step >= 0, "path", "'", path,
              "' has a malformed adamw.step '", s, "' (expected a count of steps)");
  }
  std::mt19937_64 r;
  {
    std::istringstream is(get("rng"));
    is >> r;
    c.require(!is.fail() && (is >> std::ws).eof(), "path", "'", path, "' has a malformed rng state");
  }
  // Every tensor present, of T's dtype and the parameter's size.
  auto check = [&](const std::string& name, std::size_t n) -> const unsigned char* {
    c.require(f.contains(name), "path", "'", path, "' has no tensor '", name, "'");
    const safetensors::Entry& e = f.entry(name);
    c.require(e.dtype == dtype_of<T>() && e.shape.size() == 1 && e.shape[0] == static_cast<index_t>(n), "params",
              "tensor '", name, "' is ", e.dtype_str, " ", e.shape.str(), ", expected ", ssm::name(dtype_of<T>()), " (", n, ")");
    return f.bytes(e);
  };
  std::vector<const unsigned char*> src;
  std::vector<typename AdamW<T>::Moments> moments;
  for (const auto& e : params.entries()) {
    src.push_back(check("param." + e.name, e.values->size()));
    if (step == 0) continue;
    typename AdamW<T>::Moments mo{e.name, std::vector<T>(e.values->size()), std::vector<T>(e.values->size())};
    const unsigned char* m = check("adamw.m." + e.name, e.values->size());
    const unsigned char* v = check("adamw.v." + e.name, e.values->size());
    if (!mo.m.empty()) std::memcpy(mo.m.data(), m, mo.m.size() * sizeof(T));
    if (!mo.v.empty()) std::memcpy(mo.v.data(), v, mo.v.size() * sizeof(T));
    moments.push_back(std::move(mo));
  }
  c.require(f.entries().size() == params.size() * (step == 0 ? 1 : 3), "params", "'", path, "' holds ",
            f.entries().size(), " tensors, expected ", params.size() * (step == 0 ? 1 : 3), " for this tree");
  // Checked: now write.
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::vector<T>& v = *params.entries()[i].values;
    if (!v.empty()) std::memcpy(v.data(), src[i], v.size() * sizeof(T));
  }
  opt.restore(step, std::move(moments));
  rng = r;
  if (extra) {
    extra->clear();
    for (const auto& [k, v] : meta)
      if (k.rfind("ssm.", 0) != 0 && k.rfind("adamw.", 0) != 0 && k != "rng" && k != "params") (*extra)[k] = v;
  }
}

}  // namespace ssm::train
