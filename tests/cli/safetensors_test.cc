#include "atp/cli/safetensors.h"

#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_files.h"

namespace atp::cli {
namespace {

using ::atp::cli::testing::LittleEndian;
using ::atp::cli::testing::ReadBytes;
using ::atp::cli::testing::TempDir;
using ::atp::cli::testing::WriteBytes;
using kernels::DType;
using kernels::Shape;
using kernels::Tensor;
using ::testing::HasSubstr;

Tensor RandomTensor(DType dtype, Shape shape, uint32_t seed) {
  Tensor t(dtype, std::move(shape));
  std::mt19937 rng(seed);
  auto* bytes = static_cast<unsigned char*>(t.data());
  for (size_t i = 0; i < t.byte_size(); ++i) bytes[i] = static_cast<unsigned char>(rng());
  return t;
}

// A .safetensors file with JSON `header` and `data`.
std::string FileBytes(absl::string_view header, absl::string_view data) {
  return absl::StrCat(LittleEndian(header.size(), 8), header, data);
}

void ExpectReadError(const std::string& path, absl::string_view want) {
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_FALSE(f.ok()) << "read succeeded, want error containing: " << want;
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr(path));
  EXPECT_THAT(f.status().message(), HasSubstr(want));
  EXPECT_FALSE(absl::StrContains(f.status().message(), "\n")) << f.status();
}

TEST(SafetensorsTest, RoundTripsEveryDTypeWithMetadata) {
  TempDir dir;
  kernels::WeightMap tensors;
  tensors.emplace("q_proj.weight", RandomTensor(DType::kF32, {6, 5}, 1));
  tensors.emplace("q_proj.bias", RandomTensor(DType::kF16, {3}, 2));  // 6 bytes: forces padding
  tensors.emplace("k", RandomTensor(DType::kBF16, {2, 1, 3}, 3));
  tensors.emplace("scalar", RandomTensor(DType::kF32, {}, 4));
  tensors.emplace("empty", RandomTensor(DType::kF32, {0, 3}, 5));
  tensors.emplace("odd \"name\" \\ \xc3\xa9", RandomTensor(DType::kF16, {1}, 6));
  const Metadata metadata = {{"num_heads", "4"}, {"note", "quote \" and \n newline"}};
  ASSERT_TRUE(WriteSafetensors(dir.File("l.safetensors"), tensors, metadata).ok());

  absl::StatusOr<SafetensorsFile> got = ReadSafetensors(dir.File("l.safetensors"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->metadata, metadata);
  ASSERT_EQ(got->tensors.size(), tensors.size());
  for (const auto& [name, want] : tensors) {
    SCOPED_TRACE(name);
    auto it = got->tensors.find(name);
    ASSERT_NE(it, got->tensors.end());
    EXPECT_EQ(it->second.dtype(), want.dtype());
    EXPECT_EQ(it->second.shape(), want.shape());
    ASSERT_EQ(it->second.byte_size(), want.byte_size());
    EXPECT_EQ(std::memcmp(it->second.data(), want.data(), want.byte_size()), 0);
  }
}

TEST(SafetensorsTest, WritesAnAlignedHeaderWithTheStandardFields) {
  TempDir dir;
  kernels::WeightMap tensors;
  tensors.emplace("b", RandomTensor(DType::kF16, {3}, 1));
  tensors.emplace("a", RandomTensor(DType::kBF16, {2, 2}, 2));
  ASSERT_TRUE(WriteSafetensors(dir.File("x.safetensors"), tensors, {}).ok());
  const std::string bytes = ReadBytes(dir.File("x.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.rfind("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[8,14]}}",
                         0),
            0u)
      << header;
  EXPECT_FALSE(absl::StrContains(header, "__metadata__"));
  EXPECT_EQ(bytes.size(), 8 + n + 16);  // 8 + 6 bytes of data, padded to 16
}

TEST(SafetensorsTest, ReadsHeadersOtherWritersProduce) {
  TempDir dir;
  // Member order, whitespace, padding spaces and a "format" metadata key as PyTorch writes them.
  const std::string header =
      "{ \"__metadata__\" : {\"format\": \"pt\"},\n \"w\": {\"data_offsets\": [0, 8], "
      "\"shape\": [2], \"dtype\": \"F32\"} }      ";
  WriteBytes(dir.File("x.safetensors"), FileBytes(header, std::string(8, '\x01')));
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(dir.File("x.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata.at("format"), "pt");
  EXPECT_EQ(f->tensors.at("w").shape(), (Shape{2}));
}

TEST(SafetensorsTest, RejectsBadFilesNamingTheProblem) {
  TempDir dir;
  const std::string w8 = "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
  const struct {
    std::string header;
    size_t data_bytes;
    const char* want;
  } cases[] = {
      {"[1, 2]", 0, "it is a JSON array, want an object"},
      {"{\"w\": 3}", 0, "tensor \"w\" is a JSON number, want an object"},
      {"{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "tensor \"w\" has no dtype"},
      {"{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
       "tensor \"w\" has dtype \"F64\", want F32, F16 or BF16"},
      {"{\"w\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
       "has dtype \"I32\""},
      {"{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "has no shape array"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
       "not a non-negative integer"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
       "not a non-negative integer"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
       "no data_offsets [begin, end]"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4,
       "want begin <= end"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8,
       "has shape [3] F32 (12 bytes) but data_offsets [0, 8] span 8 bytes"},
      {"{" + w8 + "}", 4,
       "is truncated: tensor \"w\" ends at byte 8 of the data section, which "
       "has 4 bytes"},
      {"{" + w8 + ",\"v\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}", 8,
       "tensors \"w\" and \"v\" overlap"},
      {"{\"__metadata__\": [1]}", 0, "__metadata__ is a JSON array, want an object"},
      {"{\"__metadata__\": {\"num_heads\": 4}}", 0,
       "__metadata__ value of \"num_heads\" is a JSON number, want a string"},
      {"{" + w8 + "," + w8 + "}", 8, "duplicate member name \"w\""},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], }", 8, "JSON error at byte"},
      {"not json", 0, "bad .safetensors header: JSON error at byte 0"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [99999999999, 99999999999, 99999999999], "
       "\"data_offsets\": [0, 4]}}",
       4, "too large"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.header);
    WriteBytes(dir.File("bad.safetensors"), FileBytes(c.header, std::string(c.data_bytes, '\0')));
    ExpectReadError(dir.File("bad.safetensors"), c.want);
  }
}

TEST(SafetensorsTest, RejectsTruncatedAndOversizeHeaders) {
  TempDir dir;
  WriteBytes(dir.File("tiny.safetensors"), "abc");
  ExpectReadError(dir.File("tiny.safetensors"), "not a .safetensors file: it has 3 bytes");
  WriteBytes(dir.File("short.safetensors"), LittleEndian(100, 8) + "{}");
  ExpectReadError(dir.File("short.safetensors"),
                  "is truncated: its header length is 100 bytes, the file has 2");
  WriteBytes(dir.File("huge.safetensors"), LittleEndian(~0ull, 8) + "{}");
  ExpectReadError(dir.File("huge.safetensors"), "want at most 104857600");
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  TempDir dir;
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(dir.File("nope.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("nope.safetensors"));
}

TEST(SafetensorsTest, WriteRejectsReservedNames) {
  TempDir dir;
  kernels::WeightMap tensors;
  tensors.emplace("__metadata__", RandomTensor(DType::kF32, {1}, 1));
  absl::Status s = WriteSafetensors(dir.File("x.safetensors"), tensors, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("reserved"));
  EXPECT_FALSE(std::filesystem::exists(dir.File("x.safetensors")));
}

}  // namespace
}  // namespace atp::cli
