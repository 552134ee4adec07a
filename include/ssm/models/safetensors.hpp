// A reader and writer of the safetensors format (Hugging Face): an 8-byte little-endian header length
// N, a JSON header of N bytes ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}),
// then the raw little-endian tensor bytes. Files are memory-mapped; every view keeps the mapping alive.
// Every malformed input is an ssm::Error, and the parser never reads outside the buffer it was given.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm::safetensors {

/// Header larger than this is rejected before it is parsed (the reference implementation uses 100 MB).
inline constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;

/// A dtype name of the safetensors format, with its element size in bytes; `dtype` is the ssm DType
/// it maps to, or empty when ssm has no such element type (BOOL, I8, I16, U16, U32, U64, F8_*).
struct DTypeInfo {
  const char* name;
  std::size_t bytes;
  std::optional<DType> dtype;
};

/// Looks up a safetensors dtype string; nullopt when the string is not a safetensors dtype at all.
inline std::optional<DTypeInfo> dtype_info(const std::string& s) {
  static const DTypeInfo table[] = {
      {"F32", 4, DType::f32},    {"F64", 8, DType::f64},     {"F16", 2, DType::f16},    {"BF16", 2, DType::bf16},
      {"I32", 4, DType::i32},    {"I64", 8, DType::i64},     {"U8", 1, DType::u8},      {"BOOL", 1, std::nullopt},
      {"I8", 1, std::nullopt},   {"I16", 2, std::nullopt},   {"U16", 2, std::nullopt},  {"U32", 4, std::nullopt},
      {"U64", 8, std::nullopt},  {"F8_E4M3", 1, std::nullopt}, {"F8_E5M2", 1, std::nullopt},
  };
  for (const auto& e : table)
    if (s == e.name) return e;
  return std::nullopt;
}

/// The safetensors name of an ssm DType (complex types have none).
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    default: fail("safetensors: dtype ", name(t), " has no safetensors equivalent");
  }
}

/// One tensor of the header. `begin`/`end` are byte offsets into the data section.
struct Entry {
  std::string name;
  std::string dtype_str;  // as written in the file, e.g. "BF16"
  std::optional<DType> dtype;
  Dims shape;
  std::uint64_t begin = 0, end = 0;
};

namespace detail {

/// A read-only mapping of a whole file; unmapped when the last owner goes away.
class Mapping {
 public:
  explicit Mapping(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    SSM_CHECK(fd >= 0, "safetensors: cannot open '", path, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      fail("safetensors: cannot stat '", path, "': ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("safetensors: '", path, "' is not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);
      SSM_CHECK(p != MAP_FAILED, "safetensors: cannot mmap '", path, "' (", size_, " bytes): ", std::strerror(err));
      data_ = static_cast<const unsigned char*>(p);
    } else {
      ::close(fd);
    }
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

inline std::uint64_t read_u64_le(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

/// a * b, failing on overflow of uint64.
inline std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const std::string& what) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a)
    fail("safetensors: ", what, ": size overflows 64 bits");
  return a * b;
}

}  // namespace detail

/// A parsed safetensors buffer (usually a memory-mapped file). Cheap to copy: copies share the buffer.
class File {
 public:
  /// Memory-maps and parses the file at `path`. As with any mapping, the file must not be truncated
  /// or rewritten in place while views into it are alive (the OS would fault on access).
  static File open(const std::string& path) {
    auto mapping = std::make_shared<detail::Mapping>(path);
    const unsigned char* data = mapping->data();
    const std::size_t size = mapping->size();
    return parse(std::shared_ptr<const void>(mapping, data), data, size, path);
  }

  /// Parses `size` bytes at `data`; `owner` keeps them alive for the views handed out. `source` names
  /// the buffer in error messages. Never reads outside [data, data + size).
  static File parse(std::shared_ptr<const void> owner, const unsigned char* data, std::size_t size,
                    const std::string& source = "buffer") {
    File f;
    f.owner_ = std::move(owner);
    f.source_ = source;
    const std::string where = "safetensors: '" + source + "'";
    SSM_CHECK(size >= 8, where, ": truncated file: ", size, " bytes, but the header length alone takes 8");
    const std::uint64_t n = detail::read_u64_le(data);
    SSM_CHECK(n <= size - 8, where, ": header length ", n, " runs past the end of the file (", size - 8,
              " bytes after the length field)");
    SSM_CHECK(n <= kMaxHeaderBytes, where, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes,
              " bytes");
    SSM_CHECK(n >= 2, where, ": header length ", n, " is too short for a JSON object");
    const char* hb = reinterpret_cast<const char*>(data + 8);
    nlohmann::json header = nlohmann::json::parse(hb, hb + n, nullptr, /*allow_exceptions=*/false);
    SSM_CHECK(!header.is_discarded(), where, ": header is not valid JSON");
    SSM_CHECK(header.is_object(), where, ": header must be a JSON object, got a ", header.type_name());
    f.data_ = data + 8 + n;
    f.data_size_ = size - 8 - n;

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& key = it.key();
      const nlohmann::json& v = it.value();
      if (key == "__metadata__") {
        SSM_CHECK(v.is_object(), where, ": '__metadata__' must be an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          SSM_CHECK(m.value().is_string(), where, ": '__metadata__' entry '", m.key(), "' is not a string");
          f.metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string t = where + ": tensor '" + key + "'";
      SSM_CHECK(v.is_object(), t, ": entry must be an object with dtype, shape and data_offsets");
      SSM_CHECK(v.contains("dtype") && v["dtype"].is_string(), t, ": missing or non-string 'dtype'");
      SSM_CHECK(v.contains("shape") && v["shape"].is_array(), t, ": missing or non-array 'shape'");
      SSM_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2, t,
                ": 'data_offsets' must be an array [begin, end]");
      Entry e;
      e.name = key;
      e.dtype_str = v["dtype"].get<std::string>();
      const auto info = dtype_info(e.dtype_str);
      SSM_CHECK(info.has_value(), t, ": unknown dtype '", e.dtype_str, "'");
      e.dtype = info->dtype;
      const auto& shape = v["shape"];
      SSM_CHECK(shape.size() <= static_cast<std::size_t>(kMaxRank), t, ": rank ", shape.size(),
                " exceeds the maximum rank ", kMaxRank);
      std::vector<index_t> dims;
      std::uint64_t numel = 1;
      for (const auto& s : shape) {
        SSM_CHECK(s.is_number_unsigned() ||
                      (s.is_number_integer() && s.get<std::int64_t>() >= 0),
                  t, ": shape entries must be non-negative integers, got ", s.dump());
        const std::uint64_t x = s.get<std::uint64_t>();
        SSM_CHECK(x <= static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()), t, ": extent ", x,
                  " is too large");
        numel = detail::checked_mul(numel, x, "tensor '" + key + "'");
        dims.push_back(static_cast<index_t>(x));
      }
      e.shape = Dims(dims);
      for (const auto& o : v["data_offsets"])
        SSM_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<std::int64_t>() >= 0), t,
                  ": data_offsets must be non-negative integers, got ", o.dump());
      e.begin = v["data_offsets"][0].get<std::uint64_t>();
      e.end = v["data_offsets"][1].get<std::uint64_t>();
      SSM_CHECK(e.begin <= e.end, t, ": data_offsets [", e.begin, ", ", e.end, "] has begin > end");
      SSM_CHECK(e.end <= f.data_size_, t, ": data_offsets [", e.begin, ", ", e.end,
                "] out of range: the data section has ", f.data_size_, " bytes");
      const std::uint64_t bytes = detail::checked_mul(numel, info->bytes, "tensor '" + key + "'");
      SSM_CHECK(bytes == e.end - e.begin, t, ": shape ", e.shape.str(), " of dtype ", e.dtype_str, " needs ",
                bytes, " bytes, but data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin);
      f.entries_.push_back(std::move(e));
    }
    // The tensors must tile the data section exactly: no overlap, no hole, nothing left over.
    std::vector<const Entry*> order;
    for (const auto& e : f.entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::uint64_t pos = 0;
    for (std::size_t i = 0; i < order.size(); ++i) {
      const Entry& e = *order[i];
      if (e.begin < pos)
        fail(where, ": tensor '", e.name, "' (bytes [", e.begin, ", ", e.end, ")) overlaps tensor '",
             order[i - 1]->name, "' (bytes [", order[i - 1]->begin, ", ", order[i - 1]->end, "))");
      SSM_CHECK(e.begin == pos, where, ": bytes [", pos, ", ", e.begin, ") of the data section belong to no tensor");
      pos = e.end;
    }
    SSM_CHECK(pos == f.data_size_, where, ": the tensors cover ", pos, " bytes but the data section has ",
              f.data_size_, " (trailing bytes belong to no tensor)");
    std::sort(f.entries_.begin(), f.entries_.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
    return f;
  }

  const std::string& source() const { return source_; }
  /// All tensors, sorted by name.
  const std::vector<Entry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return find(name) != nullptr; }

  const Entry& entry(const std::string& name) const {
    const Entry* e = find(name);
    SSM_CHECK(e != nullptr, "safetensors: '", source_, "' has no tensor named '", name, "'");
    return *e;
  }

  /// The raw bytes of a tensor, inside the mapped buffer.
  const unsigned char* bytes(const Entry& e) const { return data_ + e.begin; }

  /// The tensor as an owning ssm::Tensor that shares (and keeps alive) the mapping when its bytes are
  /// aligned for the element type, else a copy. Read-only: do not write through it.
  Tensor tensor(const std::string& name) const {
    const Entry& e = entry(name);
    SSM_CHECK(e.dtype.has_value(), "safetensors: '", source_, "': tensor '", name, "' has dtype ", e.dtype_str,
              ", which ssm has no element type for");
    const std::size_t es = size_of(*e.dtype);
    const unsigned char* p = bytes(e);
    if (reinterpret_cast<std::uintptr_t>(p) % es == 0) {
      TensorView v(const_cast<unsigned char*>(p), *e.dtype, Device::cpu(), e.shape);
      return Tensor::adopt(v, std::shared_ptr<void>(owner_, const_cast<unsigned char*>(p)));
    }
    Tensor t = Tensor::empty(e.shape, *e.dtype);
    if (t.nbytes() > 0) std::memcpy(t.data(), p, t.nbytes());
    return t;
  }

  /// The tensor converted to float (F32, F16, BF16, F64 accepted), as a new contiguous f32 Tensor.
  Tensor tensor_f32(const std::string& name) const {
    const Entry& e = entry(name);
    Tensor out = Tensor::empty(e.shape, DType::f32);
    float* dst = out.data_as<float>();
    const unsigned char* p = bytes(e);
    const index_t n = e.shape.product();
    auto load = [&](auto tag) {
      using T = decltype(tag);
      for (index_t i = 0; i < n; ++i) {
        T x;
        std::memcpy(&x, p + static_cast<std::size_t>(i) * sizeof(T), sizeof(T));
        dst[i] = static_cast<float>(x);
      }
    };
    if (e.dtype == DType::f32) {
      if (n > 0) std::memcpy(dst, p, static_cast<std::size_t>(n) * 4);
    } else if (e.dtype == DType::f16) {
      load(half{});
    } else if (e.dtype == DType::bf16) {
      load(bfloat16{});
    } else if (e.dtype == DType::f64) {
      load(double{});
    } else {
      fail("safetensors: '", source_, "': tensor '", name, "' has dtype ", e.dtype_str,
           ", expected a floating type (F32, F16, BF16, F64)");
    }
    return out;
  }

 private:
  const Entry* find(const std::string& name) const {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                               [](const Entry& e, const std::string& n) { return e.name < n; });
    return it != entries_.end() && it->name == name ? &*it : nullptr;
  }

  std::shared_ptr<const void> owner_;
  std::string source_;
  const unsigned char* data_ = nullptr;
  std::size_t data_size_ = 0;
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

/// A checkpoint of one or more safetensors files addressed by tensor name: a single `model.safetensors`, or
/// the shards of a sharded checkpoint (`model.safetensors.index.json`, whose "weight_map" names each tensor's
/// shard, as transformers' save_pretrained writes it). Every shard is memory-mapped. Cheap to copy.
class Checkpoint {
 public:
  Checkpoint() = default;
  /// One file holding every tensor.
  explicit Checkpoint(File f) : source_(f.source()) {
    files_.push_back(std::move(f));
    for (const auto& e : files_[0].entries()) where_[e.name] = 0;
  }

  /// Opens the index at `index_path` and memory-maps every shard it names (file names in the index's
  /// directory). Throws ssm::Error naming the file for a malformed index, a missing shard, a tensor that the
  /// map sends to a shard that lacks it, a tensor in a shard that the map does not list, a tensor in two
  /// shards or twice in the map.
  static Checkpoint open_index(const std::string& index_path) {
    namespace fs = std::filesystem;
    const std::string where = "safetensors: index '" + index_path + "'";
    std::ifstream is(index_path);
    SSM_CHECK(is.good(), where, ": cannot open");
    const std::string text((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
    // JSON objects silently keep the last of two equal keys: find a tensor named twice in the weight_map
    // while parsing (keys at depth 2 below the top-level key "weight_map").
    std::string section, twice;
    std::set<std::string> seen;
    auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
      if (ev == nlohmann::json::parse_event_t::key) {
        const std::string k = parsed.get<std::string>();
        if (depth == 1) section = k;
        if (depth == 2 && section == "weight_map" && !seen.insert(k).second && twice.empty()) twice = k;
      }
      return true;
    };
    nlohmann::json j = nlohmann::json::parse(text, cb, /*allow_exceptions=*/false);
    SSM_CHECK(!j.is_discarded(), where, " is not valid JSON");
    SSM_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), where,
              " lacks a 'weight_map' object (tensor name -> shard file)");
    SSM_CHECK(twice.empty(), where, ": tensor '", twice, "' is listed twice in the weight_map");
    const fs::path dir = fs::path(index_path).parent_path();
    Checkpoint c;
    c.source_ = index_path;
    std::map<std::string, std::size_t> shard_of_file;  // shard file name -> index in files_
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      SSM_CHECK(it.value().is_string(), where, ": weight_map entry '", it.key(), "' must be a file name, got ",
                it.value().dump());
      const std::string shard = it.value().get<std::string>();
      // A shard is a file next to the index: a path could read anywhere on the machine.
      SSM_CHECK(!shard.empty() && shard != "." && shard != ".." && shard.find('/') == std::string::npos &&
                    shard.find('\\') == std::string::npos,
                where, ": tensor '", it.key(), "' maps to '", shard, "', which is not a file name in the directory");
      auto [pos, inserted] = shard_of_file.try_emplace(shard, c.files_.size());
      if (inserted) {
        const fs::path p = dir / shard;
        SSM_CHECK(fs::is_regular_file(p), where, ": shard '", shard, "' (holding tensor '", it.key(), "') not found at '",
                  p.string(), "'");
        c.files_.push_back(File::open(p.string()));
      }
      c.where_[it.key()] = pos->second;
    }
    for (const auto& [name, k] : c.where_)
      SSM_CHECK(c.files_[k].contains(name), where, ": the weight_map puts tensor '", name, "' in shard '",
                c.files_[k].source(), "', which lacks it");
    for (std::size_t k = 0; k < c.files_.size(); ++k)
      for (const auto& e : c.files_[k].entries()) {
        auto m = c.where_.find(e.name);
        SSM_CHECK(m != c.where_.end(), where, ": shard '", c.files_[k].source(), "' holds tensor '", e.name,
                  "', which is not listed in the weight_map");
        const std::size_t mapped = m->second;
        SSM_CHECK(mapped == k, where, ": tensor '", e.name, "' is in both shard '", c.files_[mapped].source(),
                  "' and shard '", c.files_[k].source(), "'");
      }
    return c;
  }

  /// The file (or index) the checkpoint was opened from, for messages.
  const std::string& source() const { return source_; }
  /// The shards, in the order the index first names them (one for a single file).
  const std::vector<File>& files() const { return files_; }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  /// The file holding tensor `name`; throws ssm::Error when there is none.
  const File& file_of(const std::string& name) const {
    auto it = where_.find(name);
    SSM_CHECK(it != where_.end(), "safetensors: '", source_, "' has no tensor named '", name, "'");
    return files_[it->second];
  }
  const Entry& entry(const std::string& name) const { return file_of(name).entry(name); }
  /// See File::tensor_f32.
  Tensor tensor_f32(const std::string& name) const { return file_of(name).tensor_f32(name); }
  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, k] : where_) out.push_back(name);
    return out;
  }

 private:
  std::string source_;
  std::vector<File> files_;
  std::map<std::string, std::size_t> where_;  // tensor name -> index in files_
};

/// Serializes named CPU tensors (any strides) to safetensors bytes, in the order given. The header is
/// padded with spaces to a multiple of 8 bytes so that the data section stays 8-byte aligned.
inline std::string serialize(const std::vector<std::pair<std::string, TensorView>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    SSM_CHECK(t.device().is_cpu(), "safetensors::serialize: tensor '", name, "' is on ", t.device().str(),
              ", expected cpu");
    SSM_CHECK(name != "__metadata__", "safetensors::serialize: '__metadata__' is not a valid tensor name");
    SSM_CHECK(!header.contains(name), "safetensors::serialize: duplicate tensor name '", name, "'");
    std::vector<index_t> shape(t.shape().begin(), t.shape().end());
    header[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  out += h;
  for (const auto& [name, t] : tensors) {
    Tensor c = Tensor::empty(t.shape(), t.dtype());
    copy(c.view(), t);
    out.append(static_cast<const char*>(c.data()), c.nbytes());
  }
  return out;
}

/// Writes named CPU tensors to a safetensors file at `path`.
inline void save(const std::string& path, const std::vector<std::pair<std::string, TensorView>>& tensors,
                 const std::map<std::string, std::string>& metadata = {}) {
  const std::string bytes = serialize(tensors, metadata);
  std::ofstream os(path, std::ios::binary | std::ios::trunc);
  SSM_CHECK(os.good(), "safetensors::save: cannot open '", path, "' for writing");
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  SSM_CHECK(os.good(), "safetensors::save: failed writing ", bytes.size(), " bytes to '", path, "'");
}

/// Parses safetensors bytes held in memory (copied into an owned buffer).
inline File parse_bytes(const std::string& bytes, const std::string& source = "buffer") {
  auto buf = std::make_shared<std::vector<unsigned char>>(bytes.begin(), bytes.end());
  const unsigned char* p = buf->data();
  const std::size_t n = buf->size();
  return File::parse(std::shared_ptr<const void>(buf, p), p, n, source);
}

}  // namespace ssm::safetensors
