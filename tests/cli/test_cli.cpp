// ssm-generate (apps/ssm-generate) against the library: its stdout is the text of MambaLM::generate's tokens for
// the same prompt and options; MambaLM::generate_stream and DecodeStream, the pieces it is built from. The
// bad-input cases are in CMakeLists.txt (run_cli.cmake).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "ssm/models.hpp"

namespace {

using ssm::models::DecodeStream;
using ssm::models::GenerationOptions;
using ssm::models::MambaLM;
using ssm::models::Tokenizer;
using Ids = std::vector<std::int64_t>;

const std::string kData = SSM_TEST_DATA_DIR;
const std::string kTiny = kData + "/mamba/tiny";

// stdout of ssm-generate with `args` (stderr discarded), and its exit status.
std::string run_cli(const std::string& args, int* status = nullptr) {
  const std::string cmd = std::string("'") + SSM_GENERATE_EXE + "' " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr) << cmd;
  if (p == nullptr) return {};
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  if (status != nullptr) *status = st;
  EXPECT_EQ(st, 0) << cmd;
  return out;
}

std::string join(const Ids& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) s += " ";
    s += std::to_string(ids[i]);
  }
  return s;
}

TEST(Cli, GreedyTextIsTheLibrarysGenerationDecoded) {
  const MambaLM model = MambaLM::load(kTiny);
  const Tokenizer tok = Tokenizer::load(kTiny + "/tokenizer.json");
  const Ids prompt = tok.encode("The state space");
  ASSERT_EQ(prompt.size(), 15u);  // one token per byte
  const Ids want = model.generate(prompt, 40);
  ASSERT_FALSE(want.empty());
  const std::string out = run_cli("--model '" + kTiny + "' --prompt 'The state space' -n 40");
  EXPECT_EQ(out, tok.decode(want));
  EXPECT_EQ(run_cli("--model '" + kTiny + "' --prompt 'The state space' -n 40 --threads 1"), out);  // deterministic
}

TEST(Cli, SampledTextIsTheLibrarysGenerationDecoded) {
  const MambaLM model = MambaLM::load(kTiny);
  const Tokenizer tok = Tokenizer::load(kTiny + "/tokenizer.json");
  GenerationOptions opt;
  opt.temperature = 0.8;
  opt.top_k = 40;
  opt.top_p = 0.95;
  opt.seed = 7;
  opt.stop_ids = Ids{};
  const Ids want = model.generate(tok.encode("abc"), 32, opt);
  ASSERT_EQ(want.size(), 32u);
  EXPECT_EQ(run_cli("--model '" + kTiny + "' --prompt abc -n 32 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 7 "
                    "--ignore-eos"),
            tok.decode(want));
}

TEST(Cli, IdsWithoutATokenizerPrintIds) {
  const std::string dir = kData + "/falcon_mamba/tiny";  // no tokenizer.json there
  const MambaLM model = MambaLM::load(dir);
  const Ids want = model.generate({1, 17, 42, 99}, 12);
  EXPECT_EQ(run_cli("--model '" + dir + "' --ids '1, 17, 42 99' -n 12"), join(want));
}

// --weights: the program generates what the library generates with the same LoadOptions::weight_dtype. A bf16
// copy of the tiny checkpoint read as stored (the default, bf16 kept) or converted to f32, and the f32 checkpoint
// converted to bf16 and f16.
TEST(Cli, WeightsFlagLoadsAsTheLibraryWithThatWeightDtype) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("ssm_cli_bf16_" + std::to_string(::getpid()));
  MambaLM::load(kTiny).save(dir.string(), ssm::DType::bf16);
  fs::copy_file(kTiny + "/tokenizer.json", dir / "tokenizer.json");
  const Tokenizer tok = Tokenizer::load(kTiny + "/tokenizer.json");
  const Ids prompt = tok.encode("The state space");
  // The library's text for the checkpoint in model_dir loaded with weight_dtype dt; held: the dtype it must hold.
  auto generated = [&](const std::string& model_dir, std::optional<ssm::DType> dt, ssm::DType held) {
    ssm::models::LoadOptions opt;
    opt.weight_dtype = dt;
    const MambaLM model = MambaLM::load(model_dir, opt);
    EXPECT_EQ(model.weight_dtype(), held);
    return tok.decode(model.generate(prompt, 24));
  };
  const std::string bf16 = "--model '" + dir.string() + "'", f32 = "--model '" + kTiny + "'";
  const std::string cmd = " --prompt 'The state space' -n 24";
  using ssm::DType;
  EXPECT_EQ(run_cli(bf16 + cmd), generated(dir.string(), std::nullopt, DType::bf16));
  EXPECT_EQ(run_cli(bf16 + " --weights stored" + cmd), generated(dir.string(), std::nullopt, DType::bf16));
  EXPECT_EQ(run_cli(bf16 + " --weights f32" + cmd), generated(dir.string(), DType::f32, DType::f32));
  EXPECT_EQ(run_cli(f32 + " --weights bf16" + cmd), generated(kTiny, DType::bf16, DType::bf16));
  EXPECT_EQ(run_cli(f32 + " --weights f16" + cmd), generated(kTiny, DType::f16, DType::f16));
  fs::remove_all(dir);
}

TEST(GenerateStream, HandsOutGeneratesTokensInOrderAndStopsWhenAsked) {
  const MambaLM model = MambaLM::load(kTiny);
  GenerationOptions opt;
  opt.stop_ids = Ids{};
  ssm::models::MambaCache c1, c2;
  const Ids want = model.generate({5, 6, 7}, 10, opt, &c1);
  Ids got;
  const auto n = model.generate_stream({5, 6, 7}, 10, opt, [&](std::int64_t id) {
    got.push_back(id);
    return true;
  }, &c2);
  EXPECT_EQ(got, want);
  EXPECT_EQ(n, 10);
  EXPECT_EQ(c2.seqlen, c1.seqlen);  // the cache holds the state after the last token, as generate's
  got.clear();
  EXPECT_EQ(model.generate_stream({5, 6, 7}, 10, opt, [&](std::int64_t id) {
    got.push_back(id);
    return got.size() < 4;
  }), 4);
  EXPECT_EQ(got, Ids(want.begin(), want.begin() + 4));
}

TEST(GenerateStream, ChunkedPrefillGivesTheSameTokens) {
  const MambaLM model = MambaLM::load(kTiny);
  Ids prompt;
  for (int i = 0; i < 50; ++i) prompt.push_back((i * 37 + 11) % 256);
  GenerationOptions opt;
  opt.stop_ids = Ids{};
  const Ids whole = model.generate(prompt, 12, opt);
  opt.prefill_chunk = 7;
  EXPECT_EQ(model.generate(prompt, 12, opt), whole);
}

TEST(GenerateStream, RejectsPromptsOutsideTheVocabularyAndEmptyPrompts) {
  const MambaLM model = MambaLM::load(kTiny);
  EXPECT_THROW(model.generate({1, 256}, 1), ssm::Error);
  EXPECT_THROW(model.generate({}, 1), ssm::Error);
}

// The pieces concatenate to decode(all ids), and text is never printed before it is complete.
TEST(DecodeStream, PiecesConcatenateToTheDecodeOfRandomByteTokens) {
  const Tokenizer tok = Tokenizer::load(kTiny + "/tokenizer.json");
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    Ids ids;
    DecodeStream stream(tok);
    std::string text;
    for (int i = 0, n = static_cast<int>(rng() % 24); i < n; ++i) {
      ids.push_back(static_cast<std::int64_t>(rng() % 256));
      text += stream.step(ids.back());
    }
    text += stream.finish();
    EXPECT_EQ(text, tok.decode(ids)) << "trial " << trial;
  }
}

TEST(DecodeStream, HoldsBackASplitCharacterUntilItIsComplete) {
  const Tokenizer tok = Tokenizer::load(kTiny + "/tokenizer.json");
  const Ids euro = tok.encode("a\xE2\x82\xAC!");  // a € !: one token per byte
  ASSERT_EQ(euro.size(), 5u);
  DecodeStream stream(tok);
  EXPECT_EQ(stream.step(euro[0]), "a");
  EXPECT_EQ(stream.step(euro[1]), "");
  EXPECT_EQ(stream.step(euro[2]), "");
  EXPECT_EQ(stream.step(euro[3]), "\xE2\x82\xAC");
  EXPECT_EQ(stream.step(euro[4]), "!");
  EXPECT_EQ(stream.finish(), "");
  // Cut short: finish gives the incomplete sequence as U+FFFD.
  EXPECT_EQ(stream.step(euro[1]), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
}

TEST(DecodeStream, PiecesConcatenateToTheDecodeOfAMergedVocabulary) {
  const Tokenizer tok = Tokenizer::load(kData + "/tokenizer/neox/tokenizer.json");
  const Ids ids = tok.encode("Emoji: \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD caf\xC3\xA9 <|endoftext|> the model\n  x");
  DecodeStream stream(tok), skipping(tok, /*skip_special_tokens=*/true);
  std::string text, skipped;
  for (auto id : ids) {
    text += stream.step(id);
    skipped += skipping.step(id);
  }
  EXPECT_EQ(text + stream.finish(), tok.decode(ids));
  EXPECT_EQ(skipped + skipping.finish(), tok.decode(ids, true));
}

}  // namespace
