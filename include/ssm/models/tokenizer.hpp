// A Hugging Face tokenizer.json reader and byte-level BPE tokenizer, of the kind GPT-2 / GPT-NeoX / Mamba
// checkpoints ship: added tokens split out first, NFC, the GPT-2 pre-tokenizer regex (matched by hand over code
// points), byte-level BPE with a word cache, and the ByteLevel decoder. Anything else in the file is an ssm::Error
// naming the JSON key and value (docs/tokenizer.md lists what is supported).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/models/unicode_tables.hpp"

namespace ssm::models {

namespace tokenizer_detail {

/// One step of UTF-8 decoding: the code point and the bytes it took when valid; when not, `len` is the length of
/// the maximal subpart of an ill-formed sequence (Unicode 3.9, "U+FFFD substitution of maximal subparts", which is
/// what Rust's String::from_utf8_lossy replaces by one U+FFFD).
struct Utf8Step {
  char32_t cp;
  std::size_t len;
  bool valid;
};

inline Utf8Step utf8_step(const unsigned char* s, std::size_t n) {
  const unsigned b0 = s[0];
  if (b0 < 0x80) return {b0, 1, true};
  std::size_t need;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {0xFFFD, 1, false};
  }
  std::size_t k = 1;
  for (; k < need && k < n; ++k) {
    const unsigned b = s[k];
    if (b < (k == 1 ? lo : 0x80u) || b > (k == 1 ? hi : 0xBFu)) break;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (k == need) return {cp, k, true};
  return {0xFFFD, k, false};
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Bytes as UTF-8 with every maximal ill-formed subpart replaced by U+FFFD (as String::from_utf8_lossy does).
inline std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  for (std::size_t i = 0; i < bytes.size();) {
    const Utf8Step st = utf8_step(s + i, bytes.size() - i);
    if (st.valid) {
      out.append(bytes.data() + i, st.len);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += st.len;
  }
  return out;
}

template <class R, std::size_t N>
const R* find_range(const R (&table)[N], char32_t cp) {
  const R* it = std::upper_bound(std::begin(table), std::end(table), cp,
                                 [](char32_t c, const R& r) { return c < r.lo; });
  if (it == std::begin(table)) return nullptr;
  --it;
  return cp <= it->hi ? it : nullptr;
}

/// Unicode White_Space (PropList.txt): what the regex's \s (Oniguruma) and Rust's char::is_whitespace match.
inline bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

enum class CharClass : std::uint8_t { letter, number, space, other };

inline CharClass classify_slow(char32_t c) {
  if (is_white_space(c)) return CharClass::space;
  if (find_range(unicode::kLetter, c)) return CharClass::letter;
  if (find_range(unicode::kNumber, c)) return CharClass::number;
  return CharClass::other;
}

inline CharClass classify(char32_t c) {
  static const std::array<CharClass, 128> ascii = [] {
    std::array<CharClass, 128> a{};
    for (char32_t i = 0; i < 128; ++i) a[i] = classify_slow(i);
    return a;
  }();
  return c < 128 ? ascii[c] : classify_slow(c);
}

// ---- NFC ------------------------------------------------------------------------------------------------------

constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

inline std::uint32_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const auto* r = find_range(unicode::kCombiningClass, c);
  return r ? r->ccc : 0;
}

inline void decompose(char32_t c, std::vector<char32_t>& out) {
  if (c >= kHangulS && c < kHangulS + kHangulSCount) {
    const char32_t s = c - kHangulS;
    out.push_back(kHangulL + s / kHangulNCount);
    out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount) out.push_back(kHangulT + s % kHangulTCount);
    return;
  }
  const auto* end = std::end(unicode::kDecomposition);
  const auto* it = std::lower_bound(std::begin(unicode::kDecomposition), end, c,
                                    [](const unicode::Decomposition& d, char32_t v) { return d.cp < v; });
  if (it == end || it->cp != c) {
    out.push_back(c);
    return;
  }
  decompose(it->first, out);
  if (it->second) decompose(it->second, out);
}

/// The primary composite of (a, b), or 0.
inline char32_t compose(char32_t a, char32_t b) {
  if (a >= kHangulL && a < kHangulL + kHangulLCount && b >= kHangulV && b < kHangulV + kHangulVCount)
    return kHangulS + ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
  if (a >= kHangulS && a < kHangulS + kHangulSCount && (a - kHangulS) % kHangulTCount == 0 && b > kHangulT &&
      b < kHangulT + kHangulTCount)
    return a + (b - kHangulT);
  const auto* end = std::end(unicode::kComposition);
  const auto* it = std::lower_bound(std::begin(unicode::kComposition), end, std::make_pair(a, b),
                                    [](const unicode::Composition& x, const std::pair<char32_t, char32_t>& v) {
                                      return x.first != v.first ? x.first < v.first : x.second < v.second;
                                    });
  return (it != end && it->first == a && it->second == b) ? it->composite : 0;
}

/// True when every code point of (valid UTF-8) s has NFC_Quick_Check Yes and combining class 0: s is then in NFC.
inline bool nfc_quick_yes(std::string_view s) {
  static const char32_t first_unsafe = unicode::kNfcUnsafe[0].lo;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    if (p[i] < 0x80) {  // ASCII is always safe (first_unsafe is far above it)
      ++i;
      continue;
    }
    const Utf8Step st = utf8_step(p + i, s.size() - i);
    if (st.cp >= first_unsafe && find_range(unicode::kNfcUnsafe, st.cp)) return false;
    i += st.len;
  }
  return true;
}

/// NFC of valid UTF-8: full canonical decomposition, canonical ordering, canonical composition (UAX #15).
inline std::string nfc(std::string_view s) {
  std::vector<char32_t> cps;
  cps.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    const Utf8Step st = utf8_step(p + i, s.size() - i);
    decompose(st.cp, cps);
    i += st.len;
  }
  // Canonical ordering: a stable sort of every run of non-starters by combining class (runs are short).
  for (std::size_t i = 1; i < cps.size(); ++i) {
    const std::uint32_t cc = combining_class(cps[i]);
    if (cc == 0) continue;
    for (std::size_t j = i; j > 0; --j) {
      const std::uint32_t prev = combining_class(cps[j - 1]);
      if (prev == 0 || prev <= cc) break;
      std::swap(cps[j - 1], cps[j]);
    }
  }
  // Composition: a character joins the last starter unless a character in between blocks it (same or higher class).
  std::size_t out_len = 0;
  if (!cps.empty()) {
    std::size_t starter = 0;
    std::uint32_t last_cc = combining_class(cps[0]) ? 256 : 0;
    out_len = 1;
    for (std::size_t i = 1; i < cps.size(); ++i) {
      const char32_t c = cps[i];
      const std::uint32_t cc = combining_class(c);
      const char32_t composite = (last_cc < cc || last_cc == 0) ? compose(cps[starter], c) : 0;
      if (composite) {
        cps[starter] = composite;
        continue;
      }
      if (cc == 0) starter = out_len;
      last_cc = cc;
      cps[out_len++] = c;
    }
  }
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < out_len; ++i) append_utf8(out, cps[i]);
  return out;
}

// ---- the GPT-2 pre-tokenizer pattern ------------------------------------------------------------------------

/// The pattern of ByteLevel's regex; Split accepts only this one.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

/// End (byte offset) of the GPT-2 pattern's match that starts at `pos` < s.size(). The pattern matches at every
/// position (its last two alternatives and ` ?[^\s\p{L}\p{N}]+` cover every class), so splitting with it
/// ("Isolated") is cutting s at successive match ends. The alternatives, in the order the regex tries them:
///   1. 's 't 're 've 'm 'll 'd   2. ` ?\p{L}+`   3. ` ?\p{N}+`   4. ` ?[^\s\p{L}\p{N}]+`
///   5. `\s+(?!\S)`: a whitespace run up to the end, or all but its last character when a non-space follows
///   6. `\s+`: a single whitespace character before a non-space.
inline std::size_t gpt2_match_end(std::string_view s, std::size_t pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  auto at = [&](std::size_t i) { return utf8_step(p + i, n - i); };
  if (p[pos] == '\'' && pos + 1 < n) {
    const char c1 = static_cast<char>(p[pos + 1]);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return pos + 2;
    if (pos + 2 < n) {
      const char c2 = static_cast<char>(p[pos + 2]);
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return pos + 3;
    }
  }
  Utf8Step first = at(pos);
  CharClass cls = classify(first.cp);
  std::size_t i = pos;
  if (first.cp == ' ' && pos + 1 < n) {  // ` ?` before a letter, number or other character
    const Utf8Step next = at(pos + 1);
    const CharClass ncls = classify(next.cp);
    if (ncls != CharClass::space) {
      cls = ncls;
      i = pos + 1;
    }
  }
  if (cls != CharClass::space) {  // alternatives 2-4: the run of that class
    while (i < n) {
      const Utf8Step st = at(i);
      if (classify(st.cp) != cls) break;
      i += st.len;
    }
    return i;
  }
  // Whitespace: the run, and where its last character starts.
  std::size_t last_start = pos;
  while (i < n) {
    const Utf8Step st = at(i);
    if (classify(st.cp) != CharClass::space) break;
    last_start = i;
    i += st.len;
  }
  if (i == n || last_start == pos) return i;  // to the end, or a single space before a non-space (alternative 6)
  return last_start;                          // alternative 5 gives the last character back
}

// ---- byte-level alphabet ---------------------------------------------------------------------------------------

/// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to U+0100 + their rank.
inline const std::array<char32_t, 256>& byte_to_char() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (unsigned b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

/// The byte a byte-level character stands for, or -1.
inline int char_to_byte(char32_t c) {
  static const std::array<std::int16_t, 324> table = [] {
    std::array<std::int16_t, 324> t{};
    t.fill(-1);
    for (unsigned b = 0; b < 256; ++b) t[byte_to_char()[b]] = static_cast<std::int16_t>(b);
    return t;
  }();
  return c < table.size() ? table[c] : -1;
}

/// The bytes a token stands for under the ByteLevel decoder: its characters mapped back to bytes when every one is
/// a byte-level character, else the token's own UTF-8 (what tokenizers' ByteLevel decoder does).
inline std::string token_bytes(std::string_view token) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(token.data());
  for (std::size_t i = 0; i < token.size();) {
    const Utf8Step st = utf8_step(p + i, token.size() - i);
    const int b = st.valid ? char_to_byte(st.cp) : -1;
    if (b < 0) return std::string(token);
    out += static_cast<char>(b);
    i += st.len;
  }
  return out;
}

/// The token as byte-level characters when all of them are (the form BPE can produce), else nullopt.
inline std::optional<std::string> byte_form(std::string_view token) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(token.data());
  for (std::size_t i = 0; i < token.size();) {
    const Utf8Step st = utf8_step(p + i, token.size() - i);
    const int b = st.valid ? char_to_byte(st.cp) : -1;
    if (b < 0) return std::nullopt;
    out += static_cast<char>(b);
    i += st.len;
  }
  return out;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

/// A JSON value as text, for messages (non-UTF-8 bytes replaced rather than thrown on).
inline std::string json_value(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace tokenizer_detail

/// A byte-level BPE tokenizer read from a Hugging Face tokenizer.json. Immutable after loading except for its word
/// cache (guarded by a lock), so one instance may encode from several threads; copies share the cache.
class Tokenizer {
 public:
  /// An entry of "added_tokens".
  struct AddedToken {
    std::int64_t id = 0;
    std::string content;
    bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
  };

  /// Reads and parses a tokenizer.json file; ssm::Error naming the path when it cannot be read or parsed.
  static Tokenizer load(const std::string& path) {
    std::ifstream is(path, std::ios::binary);
    SSM_CHECK(is, "Tokenizer: cannot open '", path, "'");
    std::ostringstream ss;
    ss << is.rdbuf();
    const std::string text = ss.str();
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    SSM_CHECK(!j.is_discarded(), "Tokenizer: '", path, "' is not valid JSON (malformed or truncated, ", text.size(),
              " bytes)");
    return from_json(j);
  }

  /// Builds the tokenizer from a parsed tokenizer.json; ssm::Error naming the key for anything unsupported.
  static Tokenizer from_json(const nlohmann::json& j) {
    SSM_CHECK(j.is_object(), "Tokenizer: the top level of tokenizer.json must be an object, got ", j.type_name());
    Tokenizer t;
    for (const char* key : {"truncation", "padding"}) {
      SSM_CHECK(!j.contains(key) || j[key].is_null(), "Tokenizer: ", key, " ", tokenizer_detail::json_value(j[key]),
                " is not supported (must be null)");
    }
    SSM_CHECK(j.contains("model"), "Tokenizer: key 'model' is missing");
    t.read_model(j["model"]);
    if (j.contains("added_tokens")) t.read_added_tokens(j["added_tokens"]);
    t.read_normalizer(j.contains("normalizer") ? j["normalizer"] : nlohmann::json(), "normalizer");
    t.read_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json());
    t.read_post_processor(j.contains("post_processor") ? j["post_processor"] : nlohmann::json(), "post_processor");
    t.read_decoder(j.contains("decoder") ? j["decoder"] : nlohmann::json());
    t.finish();
    return t;
  }

  /// Token ids of `text` (UTF-8), as tokenizers' Tokenizer.encode(text, add_special_tokens).ids. Invalid UTF-8 is an
  /// ssm::Error naming the argument and the offset (a Python str cannot reach tokenizers with invalid UTF-8 either;
  /// pass the text through sanitize_utf8 first to encode it with U+FFFD in place of the bad bytes).
  std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens = true) const {
    check_utf8(text);
    std::vector<std::int64_t> ids;
    ids.reserve(text.size() / 3 + 4);
    if (add_special_tokens) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
    split_added(text, raw_added_, [&](std::string_view piece) {
      if (normalize_nfc_ && !tokenizer_detail::nfc_quick_yes(piece)) {
        const std::string normalized = tokenizer_detail::nfc(piece);
        split_added(normalized, normalized_added_, [&](std::string_view p) { pre_tokenize(p, 0, ids); }, ids);
      } else {
        split_added(piece, normalized_added_, [&](std::string_view p) { pre_tokenize(p, 0, ids); }, ids);
      }
    }, ids);
    if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
  }

  /// Text of `ids`, as tokenizers' Tokenizer.decode(ids, skip_special_tokens): ids that are neither in the vocabulary
  /// nor added tokens are dropped; byte sequences that are not valid UTF-8 become U+FFFD.
  std::string decode(const std::vector<std::int64_t>& ids, bool skip_special_tokens = false) const {
    std::string out;
    bool first = true;
    for (const std::int64_t id : ids) {
      if (id < 0 || id >= static_cast<std::int64_t>(tokens_.size()) || !present_[static_cast<std::size_t>(id)])
        continue;
      const auto u = static_cast<std::size_t>(id);
      if (skip_special_tokens && special_[u]) continue;
      if (byte_level_decoder_) {
        out += decoded_bytes_[u];
      } else {  // no decoder: tokens joined by spaces
        if (!first) out += ' ';
        out += tokens_[u];
      }
      first = false;
    }
    return byte_level_decoder_ ? tokenizer_detail::utf8_lossy(out) : out;
  }

  /// The id of a token (an added token's content first, then the model's vocabulary), or nullopt.
  std::optional<std::int64_t> token_to_id(std::string_view token) const {
    const auto it = token_ids_.find(token);
    if (it == token_ids_.end()) return std::nullopt;
    return it->second;
  }

  /// The token of an id (added tokens first), or nullopt for an id neither defines.
  std::optional<std::string> id_to_token(std::int64_t id) const {
    if (id < 0 || id >= static_cast<std::int64_t>(tokens_.size()) || !present_[static_cast<std::size_t>(id)])
      return std::nullopt;
    return tokens_[static_cast<std::size_t>(id)];
  }

  /// One past the largest id of the vocabulary and the added tokens: the rows an embedding table needs.
  std::int64_t vocab_size() const { return static_cast<std::int64_t>(tokens_.size()); }

  /// Whether `id` is a special added token (what decode's skip_special_tokens drops).
  bool is_special(std::int64_t id) const {
    return id >= 0 && id < vocab_size() && special_[static_cast<std::size_t>(id)];
  }

  const std::vector<AddedToken>& added_tokens() const { return added_; }

  /// `text` with every ill-formed UTF-8 subsequence replaced by U+FFFD (maximal subparts, as decode does).
  static std::string sanitize_utf8(std::string_view text) { return tokenizer_detail::utf8_lossy(text); }

 private:
  using Json = nlohmann::json;

  // One split of the pre-tokenizer: the GPT-2 regex (Split) or ByteLevel (optional prefix space, optional regex).
  struct PreTokStep {
    bool byte_level = false, add_prefix_space = false, use_regex = true;
  };

  // Added tokens matched in one pass (raw text, or normalized text): leftmost-longest, as tokenizers' Aho-Corasick.
  struct AddedMatcher {
    std::array<std::vector<std::size_t>, 256> by_first_byte;  // indices into patterns, longest first
    std::vector<std::pair<std::string, std::size_t>> patterns;  // (pattern, index into added_)
    bool empty() const { return patterns.empty(); }
  };

  struct Cache {
    std::shared_mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, tokenizer_detail::StringHash, std::equal_to<>> words;
  };
  static constexpr std::size_t kCacheCapacity = 1 << 16, kCacheMaxWordBytes = 256;

  static bool get_bool(const Json& obj, const char* key, bool fallback, const std::string& where) {
    if (!obj.contains(key) || obj[key].is_null()) return fallback;
    SSM_CHECK(obj[key].is_boolean(), "Tokenizer: ", where, ".", key, " must be a boolean, got ",
              tokenizer_detail::json_value(obj[key]));
    return obj[key].get<bool>();
  }

  static std::string get_type(const Json& obj, const std::string& where) {
    SSM_CHECK(obj.is_object(), "Tokenizer: ", where, " must be an object or null, got ",
              tokenizer_detail::json_value(obj));
    SSM_CHECK(obj.contains("type") && obj["type"].is_string(), "Tokenizer: ", where, ".type is missing");
    return obj["type"].get<std::string>();
  }

  void read_model(const Json& m) {
    SSM_CHECK(m.is_object(), "Tokenizer: model must be an object, got ", tokenizer_detail::json_value(m));
    if (m.contains("type")) {
      SSM_CHECK(m["type"].is_string() && m["type"] == "BPE", "Tokenizer: model.type ",
                tokenizer_detail::json_value(m["type"]), " is not supported (byte-level BPE only)");
    }
    SSM_CHECK(m.contains("vocab") && m["vocab"].is_object(), "Tokenizer: model.vocab is missing or not an object");
    SSM_CHECK(m.contains("merges") && m["merges"].is_array(), "Tokenizer: model.merges is missing or not an array");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      SSM_CHECK(!m.contains(key) || m[key].is_null() || m[key] == "", "Tokenizer: model.", key, " ",
                tokenizer_detail::json_value(m[key]), " is not supported (must be null)");
    }
    SSM_CHECK(!m.contains("dropout") || m["dropout"].is_null(), "Tokenizer: model.dropout ",
              tokenizer_detail::json_value(m["dropout"]), " is not supported (must be null)");
    SSM_CHECK(!get_bool(m, "byte_fallback", false, "model"),
              "Tokenizer: model.byte_fallback true is not supported (byte-level BPE only)");
    fuse_unk_ = get_bool(m, "fuse_unk", false, "model");
    ignore_merges_ = get_bool(m, "ignore_merges", false, "model");

    for (const auto& [token, id] : m["vocab"].items()) {
      SSM_CHECK(id.is_number_integer() && id.get<std::int64_t>() >= 0 && id.get<std::int64_t>() < (1ll << 31),
                "Tokenizer: model.vocab['", token, "'] must be an id in [0, 2^31), got ",
                tokenizer_detail::json_value(id));
      const auto i = id.get<std::int64_t>();
      define(i, token, false);
      model_ids_.emplace(token, static_cast<std::int32_t>(i));
      if (auto bytes = tokenizer_detail::byte_form(token)) {
        bpe_ids_.emplace(*bytes, static_cast<std::int32_t>(i));
        if (bytes->size() == 1) byte_ids_[static_cast<unsigned char>((*bytes)[0])] = static_cast<std::int32_t>(i);
      }
    }
    if (m.contains("unk_token") && !m["unk_token"].is_null()) {
      SSM_CHECK(m["unk_token"].is_string(), "Tokenizer: model.unk_token must be a string or null, got ",
                tokenizer_detail::json_value(m["unk_token"]));
      const auto it = model_ids_.find(m["unk_token"].get<std::string>());
      SSM_CHECK(it != model_ids_.end(), "Tokenizer: model.unk_token ", tokenizer_detail::json_value(m["unk_token"]),
                " is not in model.vocab");
      unk_id_ = it->second;
    }

    const Json& merges = m["merges"];
    merges_.reserve(merges.size());
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const Json& e = merges[rank];
      std::string a, b;
      if (e.is_string()) {  // "a b"
        const std::string s = e.get<std::string>();
        const std::size_t sp = s.find(' ');
        SSM_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                  "Tokenizer: model.merges[", rank, "] ", tokenizer_detail::json_value(e),
                  " must be two tokens separated by one space");
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else {  // ["a", "b"]
        SSM_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), "Tokenizer: model.merges[",
                  rank, "] ", tokenizer_detail::json_value(e), " must be \"a b\" or [\"a\", \"b\"]");
        a = e[0].get<std::string>(), b = e[1].get<std::string>();
      }
      const auto ia = model_ids_.find(a), ib = model_ids_.find(b), iab = model_ids_.find(a + b);
      SSM_CHECK(ia != model_ids_.end() && ib != model_ids_.end() && iab != model_ids_.end(),
                "Tokenizer: model.merges[", rank, "] ", tokenizer_detail::json_value(e), ": token '",
                ia == model_ids_.end() ? a : ib == model_ids_.end() ? b : a + b, "' is not in model.vocab");
      // A later duplicate replaces an earlier one, as in tokenizers (its merge map is collected in order).
      merges_[pair_key(ia->second, ib->second)] = {static_cast<std::int32_t>(rank), iab->second};
    }
  }

  void read_added_tokens(const Json& a) {
    SSM_CHECK(a.is_array(), "Tokenizer: added_tokens must be an array, got ", a.type_name());
    for (std::size_t i = 0; i < a.size(); ++i) {
      const Json& e = a[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      SSM_CHECK(e.is_object() && e.contains("id") && e["id"].is_number_integer() && e["id"].get<std::int64_t>() >= 0 &&
                    e["id"].get<std::int64_t>() < (1ll << 31) && e.contains("content") && e["content"].is_string(),
                "Tokenizer: ", where, " needs an integer id in [0, 2^31) and a string content, got ",
                tokenizer_detail::json_value(e));
      AddedToken t;
      t.id = e["id"].get<std::int64_t>();
      t.content = e["content"].get<std::string>();
      SSM_CHECK(!t.content.empty(), "Tokenizer: ", where, ".content is empty");
      t.special = get_bool(e, "special", false, where);
      t.single_word = get_bool(e, "single_word", false, where);
      t.lstrip = get_bool(e, "lstrip", false, where);
      t.rstrip = get_bool(e, "rstrip", false, where);
      t.normalized = get_bool(e, "normalized", !t.special, where);
      added_.push_back(t);
    }
  }

  void read_normalizer(const Json& n, const std::string& where) {
    if (n.is_null()) return;
    const std::string type = get_type(n, where);
    if (type == "NFC") {
      normalize_nfc_ = true;
    } else if (type == "Sequence") {
      SSM_CHECK(n.contains("normalizers") && n["normalizers"].is_array(), "Tokenizer: ", where,
                ".normalizers is missing");
      for (std::size_t i = 0; i < n["normalizers"].size(); ++i)
        read_normalizer(n["normalizers"][i], where + ".normalizers[" + std::to_string(i) + "]");
    } else {
      fail("Tokenizer: ", where, ".type '", type, "' is not supported (NFC or a Sequence of NFC only)");
    }
  }

  void read_pre_tokenizer_step(const Json& p, const std::string& where) {
    const std::string type = get_type(p, where);
    if (type == "Sequence") {
      SSM_CHECK(p.contains("pretokenizers") && p["pretokenizers"].is_array(), "Tokenizer: ", where,
                ".pretokenizers is missing");
      for (std::size_t i = 0; i < p["pretokenizers"].size(); ++i)
        read_pre_tokenizer_step(p["pretokenizers"][i], where + ".pretokenizers[" + std::to_string(i) + "]");
      return;
    }
    SSM_CHECK(pre_steps_.empty() || !pre_steps_.back().byte_level, "Tokenizer: ", where, ".type '", type,
              "' after ByteLevel is not supported (ByteLevel must be the last pre-tokenizer)");
    if (type == "ByteLevel") {
      PreTokStep s;
      s.byte_level = true;
      s.add_prefix_space = get_bool(p, "add_prefix_space", true, where);
      s.use_regex = get_bool(p, "use_regex", true, where);
      pre_steps_.push_back(s);
    } else if (type == "Split") {
      const bool regex = p.contains("pattern") && p["pattern"].is_object() && p["pattern"].contains("Regex") &&
                         p["pattern"]["Regex"].is_string();
      SSM_CHECK(regex && p["pattern"]["Regex"].get<std::string>() == tokenizer_detail::kGpt2Pattern, "Tokenizer: ",
                where, ".pattern ", tokenizer_detail::json_value(p.contains("pattern") ? p["pattern"] : Json()),
                " is not supported (only {\"Regex\": the GPT-2 pattern})");
      SSM_CHECK(p.contains("behavior") && p["behavior"] == "Isolated", "Tokenizer: ", where, ".behavior ",
                tokenizer_detail::json_value(p.contains("behavior") ? p["behavior"] : Json()),
                " is not supported (Isolated only)");
      SSM_CHECK(!get_bool(p, "invert", false, where), "Tokenizer: ", where, ".invert true is not supported");
      pre_steps_.push_back(PreTokStep{});
    } else {
      fail("Tokenizer: ", where, ".type '", type, "' is not supported (ByteLevel, Split, Sequence only)");
    }
  }

  void read_pre_tokenizer(const Json& p) {
    SSM_CHECK(!p.is_null(), "Tokenizer: pre_tokenizer null is not supported (byte-level BPE needs ByteLevel)");
    read_pre_tokenizer_step(p, "pre_tokenizer");
    SSM_CHECK(!pre_steps_.empty() && pre_steps_.back().byte_level,
              "Tokenizer: pre_tokenizer has no ByteLevel step (byte-level BPE only)");
  }

  void read_post_processor(const Json& p, const std::string& where) {
    if (p.is_null()) return;
    const std::string type = get_type(p, where);
    if (type == "ByteLevel") return;  // adjusts offsets only
    if (type == "Sequence") {
      SSM_CHECK(p.contains("processors") && p["processors"].is_array(), "Tokenizer: ", where,
                ".processors is missing");
      for (std::size_t i = 0; i < p["processors"].size(); ++i)
        read_post_processor(p["processors"][i], where + ".processors[" + std::to_string(i) + "]");
      return;
    }
    SSM_CHECK(type == "TemplateProcessing", "Tokenizer: ", where, ".type '", type,
              "' is not supported (ByteLevel, TemplateProcessing, Sequence only)");
    SSM_CHECK(prefix_ids_.empty() && suffix_ids_.empty(), "Tokenizer: ", where,
              ": a second TemplateProcessing is not supported");
    SSM_CHECK(p.contains("single") && p["single"].is_array(), "Tokenizer: ", where, ".single is missing");
    SSM_CHECK(p.contains("special_tokens") && p["special_tokens"].is_object(), "Tokenizer: ", where,
              ".special_tokens is missing");
    bool seen_a = false;
    for (std::size_t i = 0; i < p["single"].size(); ++i) {
      const Json& item = p["single"][i];
      const std::string iw = where + ".single[" + std::to_string(i) + "]";
      if (item.is_object() && item.contains("Sequence")) {
        SSM_CHECK(item["Sequence"].is_object() && item["Sequence"].value("id", "") == "A", "Tokenizer: ", iw, " ",
                  tokenizer_detail::json_value(item), " is not supported (the single template holds $A only)");
        SSM_CHECK(!seen_a, "Tokenizer: ", iw, ": $A appears twice");
        seen_a = true;
        continue;
      }
      SSM_CHECK(item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object() &&
                    item["SpecialToken"].contains("id") && item["SpecialToken"]["id"].is_string(),
                "Tokenizer: ", iw, " ", tokenizer_detail::json_value(item), " is neither a Sequence nor a SpecialToken");
      const std::string name = item["SpecialToken"]["id"].get<std::string>();
      const Json& specials = p["special_tokens"];
      SSM_CHECK(specials.contains(name) && specials[name].is_object() && specials[name].contains("ids") &&
                    specials[name]["ids"].is_array(),
                "Tokenizer: ", iw, " names special token '", name, "' missing from ", where, ".special_tokens");
      for (const Json& id : specials[name]["ids"]) {
        SSM_CHECK(id.is_number_integer() && id.get<std::int64_t>() >= 0, "Tokenizer: ", where, ".special_tokens['",
                  name, "'].ids holds ", tokenizer_detail::json_value(id), ", not an id");
        (seen_a ? suffix_ids_ : prefix_ids_).push_back(id.get<std::int64_t>());
      }
    }
    SSM_CHECK(seen_a, "Tokenizer: ", where, ".single has no $A");
  }

  void read_decoder(const Json& d) {
    if (d.is_null()) return;
    const std::string type = get_type(d, "decoder");
    SSM_CHECK(type == "ByteLevel", "Tokenizer: decoder.type '", type, "' is not supported (ByteLevel or null only)");
    byte_level_decoder_ = true;
  }

  // Records token `content` under `id`; added tokens override the model's token of the same id.
  void define(std::int64_t id, const std::string& content, bool added) {
    const auto u = static_cast<std::size_t>(id);
    if (u >= tokens_.size()) {
      tokens_.resize(u + 1);
      present_.resize(u + 1, false);
      special_.resize(u + 1, false);
      from_added_.resize(u + 1, false);
    }
    if (from_added_[u] && !added) return;
    tokens_[u] = content;
    present_[u] = true;
    from_added_[u] = from_added_[u] || added;
  }

  void finish() {
    // tokenizers numbers the added tokens itself when it loads a file (an added token in the vocabulary gets its
    // vocabulary id); a file whose ids disagree with that would encode differently here, so it is refused.
    for (std::size_t i = 0; i < added_.size(); ++i) {
      const AddedToken& t = added_[i];
      const auto it = model_ids_.find(t.content);
      SSM_CHECK(it == model_ids_.end() || it->second == t.id, "Tokenizer: added_tokens[", i, "] (content ",
                tokenizer_detail::json_value(t.content), ") has id ", t.id, " but model.vocab gives it id ", it->second);
      const auto u = static_cast<std::size_t>(t.id);
      SSM_CHECK(it != model_ids_.end() || u >= tokens_.size() || !present_[u], "Tokenizer: added_tokens[", i,
                "] (content ", tokenizer_detail::json_value(t.content), ") has id ", t.id, ", which model.vocab gives to ",
                tokenizer_detail::json_value(tokens_[u]));
    }
    for (const AddedToken& t : added_) {
      // id -> token gives a normalized token's normalized content (so decode sees that), as tokenizers does;
      // token -> id below keys it by its content as written.
      define(t.id, t.normalized && normalize_nfc_ ? tokenizer_detail::nfc(t.content) : t.content, true);
      if (t.special) special_[static_cast<std::size_t>(t.id)] = true;
    }
    if (byte_level_decoder_) {
      decoded_bytes_.resize(tokens_.size());
      for (std::size_t id = 0; id < tokens_.size(); ++id)
        if (present_[id]) decoded_bytes_[id] = tokenizer_detail::token_bytes(tokens_[id]);
    }
    for (const auto& [token, id] : model_ids_) token_ids_.emplace(token, id);
    for (const AddedToken& t : added_) token_ids_[t.content] = t.id;  // added tokens take precedence
    for (std::size_t i = 0; i < added_.size(); ++i) {
      const AddedToken& t = added_[i];
      // Normalized added tokens are matched in normalized text, so their pattern is their normalized content.
      if (t.normalized) {
        normalized_added_.patterns.emplace_back(normalize_nfc_ ? tokenizer_detail::nfc(t.content) : t.content, i);
      } else {
        raw_added_.patterns.emplace_back(t.content, i);
      }
    }
    for (AddedMatcher* m : {&raw_added_, &normalized_added_}) {
      for (std::size_t k = 0; k < m->patterns.size(); ++k)
        m->by_first_byte[static_cast<unsigned char>(m->patterns[k].first[0])].push_back(k);
      for (auto& v : m->by_first_byte)
        std::stable_sort(v.begin(), v.end(), [&](std::size_t x, std::size_t y) {
          return m->patterns[x].first.size() > m->patterns[y].first.size();
        });
    }
    for (std::int64_t id : prefix_ids_)
      SSM_CHECK(id < vocab_size(), "Tokenizer: post_processor special token id ", id, " is outside the vocabulary");
    for (std::int64_t id : suffix_ids_)
      SSM_CHECK(id < vocab_size(), "Tokenizer: post_processor special token id ", id, " is outside the vocabulary");
  }

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  static void check_utf8(std::string_view text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    for (std::size_t i = 0; i < text.size();) {
      if (p[i] < 0x80) {
        ++i;
        continue;
      }
      const tokenizer_detail::Utf8Step st = tokenizer_detail::utf8_step(p + i, text.size() - i);
      if (!st.valid) {
        static const char* hex = "0123456789abcdef";
        fail("Tokenizer::encode: argument 'text' is not valid UTF-8: byte 0x", hex[p[i] >> 4], hex[p[i] & 15],
             " at offset ", i, " (use Tokenizer::sanitize_utf8 to replace invalid bytes by U+FFFD)");
      }
      i += st.len;
    }
  }

  // The regex class \w, which tokenizers checks beside a single_word token (letters, marks, Nd, Nl, Pc, ZWJ, ZWNJ).
  static bool word_char(char32_t c) {
    if (c < 128) return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    return tokenizer_detail::find_range(unicode::kWord, c) != nullptr;
  }

  // The last / first code point of valid UTF-8.
  static char32_t last_cp(std::string_view s) {
    std::size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    return tokenizer_detail::utf8_step(reinterpret_cast<const unsigned char*>(s.data()) + i, s.size() - i).cp;
  }
  static char32_t first_cp(std::string_view s) {
    return tokenizer_detail::utf8_step(reinterpret_cast<const unsigned char*>(s.data()), s.size()).cp;
  }

  /// Splits `s` around the added tokens of `m` as tokenizers' AddedVocabulary::find_matches does: successive
  /// leftmost-longest matches; a single_word token only between non-word (\\w) characters; lstrip / rstrip widen the
  /// token over the whitespace beside it. Token ids go to `ids`, the text between to `piece` (non-empty only).
  template <class F>
  void split_added(std::string_view s, const AddedMatcher& m, F&& piece, std::vector<std::int64_t>& ids) const {
    if (s.empty()) return;
    if (m.empty()) {
      piece(s);
      return;
    }
    std::size_t start_offset = 0, pos = 0;
    while (pos < s.size()) {
      const auto& cands = m.by_first_byte[static_cast<unsigned char>(s[pos])];
      std::size_t found = SIZE_MAX;
      for (const std::size_t k : cands) {
        const std::string& pat = m.patterns[k].first;
        if (s.size() - pos >= pat.size() && s.compare(pos, pat.size(), pat) == 0) {
          found = k;
          break;  // candidates are longest first
        }
      }
      if (found == SIZE_MAX) {
        ++pos;
        continue;
      }
      const AddedToken& t = added_[m.patterns[found].second];
      std::size_t start = pos, stop = pos + m.patterns[found].first.size();
      pos = stop;  // the search resumes after the match, whatever the token does with it
      if (t.single_word) {
        const bool start_space = start == 0 || !word_char(last_cp(s.substr(0, start)));
        const bool stop_space = stop == s.size() || !word_char(first_cp(s.substr(stop)));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        std::size_t new_start = start;
        while (new_start > 0) {
          std::size_t c = new_start - 1;
          while (c > 0 && (static_cast<unsigned char>(s[c]) & 0xC0) == 0x80) --c;
          if (!tokenizer_detail::is_white_space(first_cp(s.substr(c)))) break;
          new_start = c;
        }
        start = std::max(new_start, start_offset);
      }
      if (t.rstrip) {
        while (stop < s.size()) {
          const auto st =
              tokenizer_detail::utf8_step(reinterpret_cast<const unsigned char*>(s.data()) + stop, s.size() - stop);
          if (!tokenizer_detail::is_white_space(st.cp)) break;
          stop += st.len;
        }
      }
      if (start_offset < start) piece(s.substr(start_offset, start - start_offset));
      ids.push_back(t.id);
      start_offset = stop;
    }
    if (start_offset < s.size()) piece(s.substr(start_offset));
  }

  /// Runs pre-tokenizer steps from `step` on one piece; the last (ByteLevel) step hands words to the model.
  void pre_tokenize(std::string_view s, std::size_t step, std::vector<std::int64_t>& ids) const {
    if (s.empty()) return;
    const PreTokStep& st = pre_steps_[step];
    std::string prefixed;
    if (st.byte_level && st.add_prefix_space && s[0] != ' ') {
      prefixed.reserve(s.size() + 1);
      prefixed += ' ';
      prefixed += s;
      s = prefixed;
    }
    const bool last = step + 1 == pre_steps_.size();
    auto emit = [&](std::string_view w) {
      if (last) {
        encode_word(w, ids);
      } else {
        pre_tokenize(w, step + 1, ids);
      }
    };
    if (!st.use_regex) {
      emit(s);
      return;
    }
    for (std::size_t pos = 0; pos < s.size();) {
      const std::size_t end = tokenizer_detail::gpt2_match_end(s, pos);
      emit(s.substr(pos, end - pos));
      pos = end;
    }
  }

  /// BPE of one pre-tokenized word (raw bytes; the byte-level characters stand one-to-one for them), cached.
  void encode_word(std::string_view word, std::vector<std::int64_t>& ids) const {
    const bool cacheable = word.size() <= kCacheMaxWordBytes;
    if (cacheable) {
      std::shared_lock lock(cache_->mutex);
      const auto it = cache_->words.find(word);
      if (it != cache_->words.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<std::int32_t> out = bpe(word);
    ids.insert(ids.end(), out.begin(), out.end());
    if (cacheable) {
      std::unique_lock lock(cache_->mutex);
      if (cache_->words.size() < kCacheCapacity) cache_->words.emplace(std::string(word), std::move(out));
    }
  }

  std::vector<std::int32_t> bpe(std::string_view word) const {
    if (ignore_merges_) {  // a word that is a token is that token, whatever the merges would make of it
      const auto it = bpe_ids_.find(word);
      if (it != bpe_ids_.end()) return {it->second};
    }
    struct Symbol {
      std::int32_t id;
      std::int32_t prev, next;
      bool alive;
    };
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    // Initial symbols: one per byte; a byte missing from the vocabulary becomes unk_token (fused with the previous
    // unk when fuse_unk), or is dropped when there is none, as tokenizers' BPE does.
    bool prev_unk = false;
    for (const char ch : word) {
      const std::int32_t id = byte_ids_[static_cast<unsigned char>(ch)];
      if (id >= 0) {
        sym.push_back({id, 0, 0, true});
        prev_unk = false;
      } else if (unk_id_ >= 0) {
        if (!(fuse_unk_ && prev_unk)) sym.push_back({unk_id_, 0, 0, true});
        prev_unk = true;
      }
    }
    const auto n = static_cast<std::int32_t>(sym.size());
    for (std::int32_t i = 0; i < n; ++i) sym[i].prev = i - 1, sym[i].next = i + 1 < n ? i + 1 : -1;
    // Lowest rank first, then leftmost: (rank, position, merged id).
    using Entry = std::tuple<std::int32_t, std::int32_t, std::int32_t>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<>> queue;
    auto push_pair = [&](std::int32_t i) {
      if (i < 0 || sym[i].next < 0) return;
      const auto it = merges_.find(pair_key(sym[i].id, sym[sym[i].next].id));
      if (it != merges_.end()) queue.emplace(it->second.first, i, it->second.second);
    };
    for (std::int32_t i = 0; i + 1 < n; ++i) push_pair(i);
    while (!queue.empty()) {
      const auto [rank, i, merged] = queue.top();
      queue.pop();
      if (!sym[i].alive || sym[i].next < 0) continue;
      // Stale entry: the pair at i changed since it was queued.
      const auto it = merges_.find(pair_key(sym[i].id, sym[sym[i].next].id));
      if (it == merges_.end() || it->second.first != rank || it->second.second != merged) continue;
      const std::int32_t j = sym[i].next;
      sym[i].id = merged;
      sym[j].alive = false;
      sym[i].next = sym[j].next;
      if (sym[j].next >= 0) sym[sym[j].next].prev = i;
      push_pair(sym[i].prev);
      push_pair(i);
    }
    std::vector<std::int32_t> out;
    for (std::int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
    return out;
  }

  // Model
  std::unordered_map<std::string, std::int32_t, tokenizer_detail::StringHash, std::equal_to<>> model_ids_;
  std::unordered_map<std::string, std::int32_t, tokenizer_detail::StringHash, std::equal_to<>> bpe_ids_;  // raw bytes
  std::array<std::int32_t, 256> byte_ids_ = [] {
    std::array<std::int32_t, 256> a{};
    a.fill(-1);
    return a;
  }();
  std::unordered_map<std::uint64_t, std::pair<std::int32_t, std::int32_t>> merges_;  // (a, b) -> (rank, a+b)
  std::int32_t unk_id_ = -1;
  bool fuse_unk_ = false, ignore_merges_ = false;
  // Added tokens, normalizer, pre-tokenizer, post-processor, decoder
  std::vector<AddedToken> added_;
  AddedMatcher raw_added_, normalized_added_;
  bool normalize_nfc_ = false;
  std::vector<PreTokStep> pre_steps_;
  std::vector<std::int64_t> prefix_ids_, suffix_ids_;
  bool byte_level_decoder_ = false;
  // Every id: its token, whether defined, special, defined by added_tokens; its bytes under the ByteLevel decoder
  std::vector<std::string> tokens_;
  std::vector<bool> present_, special_, from_added_;
  std::vector<std::string> decoded_bytes_;
  std::unordered_map<std::string, std::int64_t, tokenizer_detail::StringHash, std::equal_to<>> token_ids_;
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

}  // namespace ssm::models
