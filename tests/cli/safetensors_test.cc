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

using ::atp::formats::testing::LittleEndian;
using ::atp::formats::testing::ReadBytes;
using ::atp::formats::testing::TempDir;
using ::atp::formats::testing::WriteBytes;
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

// The reader's checks are tested with the shared reader (tests/client/formats/); here only that
// ReadSafetensors passes its errors on unchanged.
TEST(SafetensorsTest, ReadPassesTheSharedReadersErrorsOn) {
  TempDir dir;
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(dir.File("nope.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("nope.safetensors"));
  const std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  WriteBytes(dir.File("short.safetensors"), FileBytes(header, std::string(4, '\0')));
  f = ReadSafetensors(dir.File("short.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(),
              HasSubstr(absl::StrCat(dir.File("short.safetensors"),
                                     " is truncated: tensor \"w\" ends at byte 8")));
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
