// Tests of the safetensors reader and writer: round trips (in memory and through a mapped file), the
// files written by the Python `safetensors` package (seed corpus), and every malformed case.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "ssm/models/safetensors.hpp"

namespace st = ssm::safetensors;
using ssm::DType;
using ssm::Tensor;

namespace {

std::string with_header(const std::string& json, const std::string& data) {
  std::string out(8, '\0');
  const std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json + data;
}

// Expects parse_bytes to throw an ssm::Error whose message contains `needle`.
void expect_error(const std::string& bytes, const std::string& needle) {
  try {
    st::parse_bytes(bytes, "case");
    ADD_FAILURE() << "no error, expected one containing '" << needle << "'";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Safetensors, RoundTripInMemory) {
  Tensor a = Tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6});  // (2, 3)
  Tensor b = Tensor::from_vector<ssm::half>({2}, {ssm::half(0.5f), ssm::half(-2.0f)});  // (2)
  Tensor c = Tensor::from_vector<ssm::bfloat16>({1, 1}, {ssm::bfloat16(3.0f)});  // (1, 1)
  Tensor d = Tensor::from_vector<std::int64_t>({3}, {7, -8, 9});  // (3)
  Tensor e = Tensor::empty({0, 4}, DType::f64);  // (0, 4)
  const std::string bytes =
      st::serialize({{"a", a}, {"b", b}, {"c", c}, {"d", d}, {"e", e}}, {{"format", "pt"}});
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);  // little-endian host
  EXPECT_EQ(header_len % 8, 0u);  // data section stays 8-byte aligned
  st::File f = st::parse_bytes(bytes);
  ASSERT_EQ(f.entries().size(), 5u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.tensor("a").to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.tensor("a").shape(), (ssm::Dims{2, 3}));
  EXPECT_EQ(f.tensor_f32("b").to_vector<float>(), (std::vector<float>{0.5f, -2.0f}));
  EXPECT_EQ(f.tensor_f32("c").to_vector<float>(), (std::vector<float>{3.0f}));
  EXPECT_EQ(f.tensor("d").to_vector<std::int64_t>(), (std::vector<std::int64_t>{7, -8, 9}));
  EXPECT_EQ(f.tensor("e").numel(), 0);
  EXPECT_THROW(f.tensor("missing"), ssm::Error);
  EXPECT_THROW(f.tensor_f32("d"), ssm::Error);  // an integer tensor is not convertible to float
}

TEST(Safetensors, MappedFileKeepsMappingAlive) {
  const auto path = std::filesystem::temp_directory_path() / "ssm_test_safetensors_map.safetensors";
  Tensor w = Tensor::from_vector<float>({4}, {1.5f, -2.5f, 3.5f, 0.0f});  // (4)
  st::save(path.string(), {{"w", w}});
  Tensor view;
  {
    st::File f = st::File::open(path.string());
    view = f.tensor("w");
    // Aligned data is shared with the mapping, not copied.
    EXPECT_EQ(static_cast<const unsigned char*>(view.data()), f.bytes(f.entry("w")));
  }
  std::filesystem::remove(path);  // the mapping outlives the file name and the File
  EXPECT_EQ(view.to_vector<float>(), (std::vector<float>{1.5f, -2.5f, 3.5f, 0.0f}));
}

TEST(Safetensors, ReadsFilesWrittenByPythonSafetensors) {
  // Seed-corpus files written by the Python `safetensors` package (numpy API).
  const std::string dir = std::string(SSM_SAFETENSORS_CORPUS_DIR) + "/";
  st::File f = st::File::open(dir + "two_f32");
  EXPECT_EQ(f.tensor("a").to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(f.tensor_f32("b").to_vector<float>(), (std::vector<float>{1, 1}));
  st::File g = st::File::open(dir + "bf16");
  EXPECT_EQ(g.tensor_f32("t").to_vector<float>(), (std::vector<float>{1.0f, 2.0f}));
}

TEST(Safetensors, UnalignedDataIsCopied) {
  // A header whose length is not a multiple of 4 leaves F32 data unaligned in the buffer.
  const std::string json = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  ASSERT_NE((8 + json.size()) % 4, 0u);
  float v = 42.0f;
  std::string data(4, '\0');
  std::memcpy(data.data(), &v, 4);
  st::File f = st::parse_bytes(with_header(json, data));
  EXPECT_EQ(f.tensor("x").to_vector<float>(), std::vector<float>{42.0f});
}

TEST(Safetensors, MalformedFiles) {
  const std::string ok = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data8(8, '\0');
  ASSERT_NO_THROW(st::parse_bytes(with_header(ok, data8)));

  expect_error("", "truncated");
  expect_error(std::string(5, '\0'), "truncated");
  expect_error(with_header(ok, data8).substr(0, 20), "runs past the end");  // header cut short
  expect_error(with_header(ok, "").substr(0, 8) + "{}", "runs past the end");
  {
    std::string huge(8, '\xff');  // length 2^64 - 1
    expect_error(huge + "{}", "runs past the end");
  }
  expect_error(with_header("{\"x\": [1, 2", ""), "not valid JSON");
  expect_error(with_header("[1, 2]", ""), "must be a JSON object");
  expect_error(with_header(R"({"x": 3})", ""), "entry must be an object");
  expect_error(with_header(R"({"x":{"shape":[2],"data_offsets":[0,8]}})", data8), "'dtype'");
  expect_error(with_header(R"({"x":{"dtype":"F32","data_offsets":[0,8]}})", data8), "'shape'");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data8), "data_offsets");
  expect_error(with_header(R"({"x":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", data8),
               "unknown dtype 'F33'");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8), "non-negative");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", data8), "non-negative");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", data8), "non-negative");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", data8), "out of range");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data8), "begin > end");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8), "needs 12 bytes");
  expect_error(with_header(R"({"x":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", data8), "needs 4 bytes");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})",
                           data8),
               "overflows");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})",
                           std::string(4, '\0')),
               "maximum rank");
  // Overlap, hole, and trailing bytes: the tensors must tile the data section exactly.
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           data8),
               "overlaps");
  expect_error(with_header(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8),
               "belong to no tensor");
  expect_error(with_header(ok, data8 + "xx"), "trailing bytes");
  expect_error(with_header(R"({"__metadata__":{"a":1},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                           data8),
               "not a string");
  // A known safetensors dtype ssm has no element type for parses, but cannot be viewed.
  st::File f = st::parse_bytes(with_header(R"({"x":{"dtype":"I16","shape":[4],"data_offsets":[0,8]}})", data8));
  EXPECT_THROW(f.tensor("x"), ssm::Error);
  // A file that does not exist, and a directory.
  EXPECT_THROW(st::File::open("/nonexistent/ssm.safetensors"), ssm::Error);
  EXPECT_THROW(st::File::open(std::filesystem::temp_directory_path().string()), ssm::Error);
}

TEST(Safetensors, TruncatedFileOnDisk) {
  Tensor w = Tensor::from_vector<float>({8}, {1, 2, 3, 4, 5, 6, 7, 8});  // (8)
  const std::string bytes = st::serialize({{"w", w}});
  const auto path = std::filesystem::temp_directory_path() / "ssm_test_safetensors_trunc.safetensors";
  // Every strict prefix of a valid file is rejected with an ssm::Error.
  for (std::size_t cut = 0; cut < bytes.size(); cut += 3) {
    {
      std::ofstream os(path, std::ios::binary | std::ios::trunc);
      os.write(bytes.data(), static_cast<std::streamsize>(cut));
    }
    EXPECT_THROW(st::File::open(path.string()), ssm::Error) << "prefix of " << cut << " bytes";
  }
  std::filesystem::remove(path);
}
