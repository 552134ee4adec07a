// Tests of ssm::models::Tokenizer: encode / decode against ids and strings recorded from Hugging Face tokenizers
// (tools/make_tokenizer_golden.py) on four tokenizer.json variants, the UTF-8 policy, and the errors for missing,
// malformed, truncated and unsupported files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ssm/models/tokenizer.hpp"

namespace {

using ssm::models::Tokenizer;
using Ids = std::vector<std::int64_t>;

const std::string kDir = std::string(SSM_TEST_DATA_DIR) + "/tokenizer/";

std::string read_file(const std::string& path) {
  std::ifstream is(path, std::ios::binary);
  std::ostringstream ss;
  ss << is.rdbuf();
  return ss.str();
}

const nlohmann::json& golden() {
  static const nlohmann::json g = nlohmann::json::parse(read_file(kDir + "golden.json"));
  return g;
}

const std::string& text() {
  static const std::string t = read_file(kDir + "text.txt");
  return t;
}

// Python's str.split("\n").
std::vector<std::string> lines() {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text().size(); ++i) {
    if (i == text().size() || text()[i] == '\n') {
      out.push_back(text().substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

const Tokenizer& tokenizer(const std::string& variant) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(variant);
  if (it == cache.end()) {
    // A variant kept elsewhere (mamba_tiny: the tiny checkpoint's byte tokenizer) names its path relative to kDir.
    const auto& g = golden()["variants"][variant];
    const std::string rel = g.contains("path") ? g["path"].get<std::string>() : variant + "/tokenizer.json";
    it = cache.emplace(variant, Tokenizer::load(kDir + rel)).first;
  }
  return it->second;
}

// The first index where two id lists differ, for a readable failure.
std::string first_difference(const Ids& a, const Ids& b) {
  std::size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return "first difference at index " + std::to_string(i) + " of " + std::to_string(a.size()) + " / " +
         std::to_string(b.size());
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, WholeTextIdsEqualTokenizers) {
  const auto& g = golden()["variants"][GetParam()];
  const Tokenizer& tok = tokenizer(GetParam());
  const Ids want = g["whole"].get<Ids>(), want_plain = g["whole_no_special"].get<Ids>();
  const Ids got = tok.encode(text(), true), got_plain = tok.encode(text(), false);
  EXPECT_EQ(got, want) << first_difference(got, want);
  EXPECT_EQ(got_plain, want_plain) << first_difference(got_plain, want_plain);
}

TEST_P(Golden, WholeTextDecodeEqualsTokenizers) {
  const auto& g = golden()["variants"][GetParam()];
  const Tokenizer& tok = tokenizer(GetParam());
  const Ids ids = g["whole"].get<Ids>();
  EXPECT_EQ(tok.decode(ids, false), g["decode_whole"].get<std::string>());
  EXPECT_EQ(tok.decode(ids, true), g["decode_whole_skip"].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(Variants, Golden, ::testing::Values("neox", "neox_str_merges", "bos", "split", "mamba_tiny"));

class GoldenDetailed : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenDetailed, EveryLineIdsEqualTokenizers) {
  const auto& g = golden()["variants"][GetParam()];
  const Tokenizer& tok = tokenizer(GetParam());
  const auto ls = lines();
  ASSERT_EQ(ls.size(), g["lines"].size());
  for (std::size_t i = 0; i < ls.size(); ++i) {
    EXPECT_EQ(tok.encode(ls[i], true), g["lines"][i].get<Ids>()) << "line " << i << ": " << ls[i];
    EXPECT_EQ(tok.encode(ls[i], false), g["lines_no_special"][i].get<Ids>()) << "line " << i << ": " << ls[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GoldenDetailed, ::testing::Values("neox", "bos"));

// mamba_tiny (256 byte tokens): random id sequences are mostly ill-formed UTF-8, decoded with U+FFFD as tokenizers does.
class GoldenDecodes : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenDecodes, RandomIdSequencesDecodeAsTokenizers) {
  const auto& g = golden()["variants"][GetParam()];
  const Tokenizer& tok = tokenizer(GetParam());
  for (std::size_t i = 0; i < g["decode_ids"].size(); ++i) {
    const Ids ids = g["decode_ids"][i].get<Ids>();
    EXPECT_EQ(tok.decode(ids, false), g["decode"][i].get<std::string>()) << "sequence " << i;
    EXPECT_EQ(tok.decode(ids, true), g["decode_skip"][i].get<std::string>()) << "sequence " << i;
  }
  // The last sequence is every id once: its length is tokenizers' get_vocab_size(with_added_tokens=True).
  EXPECT_EQ(tok.vocab_size(), static_cast<std::int64_t>(g["decode_ids"].back().size()));
}

INSTANTIATE_TEST_SUITE_P(Variants, GoldenDecodes, ::testing::Values("neox", "bos", "mamba_tiny"));

// The word cache is shared (and filled) by concurrent encodes; each thread must still get tokenizers' ids.
TEST(Tokenizer, ConcurrentEncodesFromAFreshTokenizerAgree) {
  const Tokenizer tok = Tokenizer::load(kDir + "neox/tokenizer.json");
  const auto ls = lines();
  const auto& want = golden()["variants"]["neox"]["lines"];
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t k = 0; k < ls.size(); ++k) {
        const std::size_t i = (k * 7 + static_cast<std::size_t>(t) * 13) % ls.size();  // a different order each
        if (tok.encode(ls[i]) != want[i].get<Ids>()) ++mismatches[static_cast<std::size_t>(t)];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(Tokenizer, MergesAsStringsAndAsArraysAgree) {
  const auto a = nlohmann::json::parse(read_file(kDir + "neox/tokenizer.json"));
  const auto b = nlohmann::json::parse(read_file(kDir + "neox_str_merges/tokenizer.json"));
  ASSERT_NE(a["model"]["merges"][0].is_string(), b["model"]["merges"][0].is_string());
  EXPECT_EQ(Tokenizer::from_json(a).encode(text()), Tokenizer::from_json(b).encode(text()));
}

TEST(Tokenizer, AddSpecialTokensAddsTheTemplatesBos) {
  const Tokenizer& bos = tokenizer("bos");
  const auto eot = bos.token_to_id("<|endoftext|>");
  ASSERT_TRUE(eot.has_value());
  const Ids with = bos.encode("hello there", true), without = bos.encode("hello there", false);
  ASSERT_EQ(with.size(), without.size() + 1);
  EXPECT_EQ(with[0], *eot);
  EXPECT_EQ(Ids(with.begin() + 1, with.end()), without);
  // The ByteLevel post-processor adds nothing.
  EXPECT_EQ(tokenizer("neox").encode("hello there", true), tokenizer("neox").encode("hello there", false));
}

TEST(Tokenizer, SkipSpecialTokensDropsOnlySpecialTokens) {
  const Tokenizer& tok = tokenizer("neox");
  const Ids ids = tok.encode("a<|endoftext|>b<|padding|>  c");
  EXPECT_EQ(tok.decode(ids, false), "a<|endoftext|>b<|padding|>  c");
  EXPECT_EQ(tok.decode(ids, true), "ab  c");  // "  " is a non-special added token: kept
  EXPECT_TRUE(tok.is_special(*tok.token_to_id("<|padding|>")));
  EXPECT_FALSE(tok.is_special(*tok.token_to_id("  ")));
}

TEST(Tokenizer, RoundTripsTextThatNfcLeavesAlone) {
  const Tokenizer& tok = tokenizer("neox");
  const std::string s =
      "Hello, world! It's 2024.\n\tTabs\t\tand   spaces  \r\n\x01\x7f \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 "
      "\xE6\xBC\xA2\xE5\xAD\x97 \xD8\xB3\xD9\x84\xD8\xA7\xD9\x85 <|endoftext|> 12345   ";
  EXPECT_EQ(tok.decode(tok.encode(s)), s);
  EXPECT_EQ(tok.decode(tok.encode(s, false)), s);
}

TEST(Tokenizer, EncodeNormalizesToNfc) {
  const Tokenizer& tok = tokenizer("neox");
  // "e" + COMBINING ACUTE and the precomposed "é" are one text after NFC; ANGSTROM SIGN is Å.
  EXPECT_EQ(tok.encode("re\xCC\x81sume\xCC\x81"), tok.encode("r\xC3\xA9sum\xC3\xA9"));
  EXPECT_EQ(tok.encode("\xE2\x84\xAB"), tok.encode("\xC3\x85"));
  EXPECT_EQ(tok.decode(tok.encode("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8")), "\xEA\xB0\x81");  // jamo -> 각
}

TEST(Tokenizer, TokenLookups) {
  const Tokenizer& tok = tokenizer("neox");
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok.token_to_id("<|padding|>"), 1);
  EXPECT_EQ(tok.id_to_token(0), "<|endoftext|>");
  EXPECT_FALSE(tok.token_to_id("no such token").has_value());
  EXPECT_FALSE(tok.id_to_token(-1).has_value());
  EXPECT_FALSE(tok.id_to_token(tok.vocab_size()).has_value());
  const auto id = tok.token_to_id("\xC4\xA0the");  // "Ġthe": a vocabulary token in byte-level characters
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(tok.encode(" the", false), Ids{*id});
  // Ids outside the vocabulary are dropped by decode, as tokenizers does.
  EXPECT_EQ(tok.decode({-5, *id, tok.vocab_size() + 10}), " the");
}

TEST(Tokenizer, InvalidUtf8InputIsAnErrorNamingTheArgument) {
  const Tokenizer& tok = tokenizer("neox");
  for (const std::string& bad : {std::string("ab\xFF"), std::string("\xC0\xAF"), std::string("x\xED\xA0\x80y"),
                                std::string("\xF0\x9F\x98"), std::string("\xF4\x90\x80\x80")}) {
    try {
      tok.encode(bad);
      ADD_FAILURE() << "no error for invalid UTF-8";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("argument 'text' is not valid UTF-8"), std::string::npos) << e.what();
    }
  }
  try {
    tok.encode("abc\xFF");
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte 0xff at offset 3"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, SanitizeUtf8ReplacesMaximalSubpartsAsRust) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(Tokenizer::sanitize_utf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(Tokenizer::sanitize_utf8("a\xFF" "b"), "a" + fffd + "b");
  EXPECT_EQ(Tokenizer::sanitize_utf8("\xF0\x9F\x98!"), fffd + "!");              // a truncated sequence: one
  EXPECT_EQ(Tokenizer::sanitize_utf8("\xED\xA0\x80"), fffd + fffd + fffd);       // a surrogate: one per byte
  EXPECT_EQ(Tokenizer::sanitize_utf8("\xC0\xAF"), fffd + fffd);                  // overlong
  EXPECT_EQ(Tokenizer::sanitize_utf8("\xE2\x82"), fffd);                         // truncated at the end
  const Tokenizer& tok = tokenizer("neox");
  EXPECT_EQ(tok.decode(tok.encode(Tokenizer::sanitize_utf8("x\xFFy"))), "x" + fffd + "y");
}

// ---- errors ----

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

nlohmann::json neox_json() { return nlohmann::json::parse(read_file(kDir + "neox/tokenizer.json")); }

#define EXPECT_ERROR_HAS(expr, needle) EXPECT_NE(error_of([&] { expr; }).find(needle), std::string::npos) \
    << error_of([&] { expr; })

TEST(TokenizerErrors, MissingFile) {
  EXPECT_ERROR_HAS(Tokenizer::load(kDir + "no_such_dir/tokenizer.json"), "cannot open '" + kDir + "no_such_dir");
}

TEST(TokenizerErrors, MalformedAndTruncatedJson) {
  const auto dir = std::filesystem::temp_directory_path() / ("ssm_tok_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string malformed = (dir / "malformed.json").string(), truncated = (dir / "truncated.json").string();
  std::ofstream(malformed) << "{\"model\": {\"type\": \"BPE\",, }}";
  const std::string full = read_file(kDir + "neox/tokenizer.json");
  std::ofstream(truncated) << full.substr(0, full.size() / 2);
  EXPECT_ERROR_HAS(Tokenizer::load(malformed), "'" + malformed + "' is not valid JSON");
  EXPECT_ERROR_HAS(Tokenizer::load(truncated), "'" + truncated + "' is not valid JSON (malformed or truncated");
  std::filesystem::remove_all(dir);
}

TEST(TokenizerErrors, UnsupportedPartsNameKeyAndValue) {
  auto with = [](const char* pointer, const nlohmann::json& v) {
    auto j = neox_json();
    j[nlohmann::json::json_pointer(pointer)] = v;
    return j;
  };
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/model/type", "WordPiece")),
                   "Tokenizer: model.type \"WordPiece\" is not supported (byte-level BPE only)");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/model/dropout", 0.1)), "model.dropout 0.1 is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/model/byte_fallback", true)), "model.byte_fallback true");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/model/continuing_subword_prefix", "##")),
                   "model.continuing_subword_prefix \"##\" is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/normalizer", {{"type", "NFKC"}})),
                   "normalizer.type 'NFKC' is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/pre_tokenizer", {{"type", "Metaspace"}})),
                   "pre_tokenizer.type 'Metaspace' is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/pre_tokenizer", nullptr)), "pre_tokenizer null is not supported");
  EXPECT_ERROR_HAS(
      Tokenizer::from_json(with("/pre_tokenizer", {{"type", "Sequence"},
                                                   {"pretokenizers", {{{"type", "Split"},
                                                                       {"pattern", {{"Regex", "\\s+"}}},
                                                                       {"behavior", "Isolated"},
                                                                       {"invert", false}},
                                                                      {{"type", "ByteLevel"}}}}})),
      "pre_tokenizer.pretokenizers[0].pattern {\"Regex\":\"\\\\s+\"} is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/decoder", {{"type", "Metaspace"}})),
                   "decoder.type 'Metaspace' is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/post_processor", {{"type", "BertProcessing"}})),
                   "post_processor.type 'BertProcessing' is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/truncation", {{"max_length", 512}})),
                   "truncation {\"max_length\":512} is not supported");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/model/merges/0", "th zzzz")),
                   "model.merges[0] \"th zzzz\": token 'zzzz' is not in model.vocab");
  EXPECT_ERROR_HAS(Tokenizer::from_json(with("/model/unk_token", "<unk>")), "model.unk_token \"<unk>\" is not in");
  auto moved = neox_json();
  moved["added_tokens"][1]["id"] = 5;  // <|padding|> is id 1 in model.vocab
  EXPECT_ERROR_HAS(Tokenizer::from_json(moved),
                   "added_tokens[1] (content \"<|padding|>\") has id 5 but model.vocab gives it id 1");
  auto clash = neox_json();
  clash["added_tokens"].back()["id"] = 42;
  EXPECT_ERROR_HAS(Tokenizer::from_json(clash), "has id 42, which model.vocab gives to");
  auto no_model = neox_json();
  no_model.erase("model");
  EXPECT_ERROR_HAS(Tokenizer::from_json(no_model), "key 'model' is missing");
  EXPECT_ERROR_HAS(Tokenizer::from_json(nlohmann::json::array()), "top level of tokenizer.json must be an object");
}

}  // namespace
