#include "atp/cli/npy.h"

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
  for (size_t i = 0; i < t.byte_size(); ++i) bytes[i] = static_cast<unsigned char>(rng() & 0x3f);
  return t;
}

// A version 1.0 .npy file with `header` (padded as NumPy pads) followed by `data`.
std::string NpyBytes(absl::string_view header, absl::string_view data, int major = 1) {
  std::string h(header);
  const size_t prefix = major == 1 ? 10 : 12;
  h.append((64 - (prefix + h.size() + 1) % 64) % 64, ' ');
  h.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  out += LittleEndian(h.size(), major == 1 ? 2 : 4);
  return absl::StrCat(out, h, data);
}

// Expects `path` to fail to read with INVALID_ARGUMENT, a one-line message naming the file and
// containing `want`.
void ExpectReadError(const std::string& path, absl::string_view want) {
  absl::StatusOr<Tensor> t = ReadNpy(path);
  ASSERT_FALSE(t.ok()) << "read succeeded, want error containing: " << want;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_THAT(t.status().message(), HasSubstr(path));
  EXPECT_THAT(t.status().message(), HasSubstr(want));
  EXPECT_FALSE(absl::StrContains(t.status().message(), "\n")) << t.status();
}

TEST(NpyTest, RoundTripsFloat32AndFloat16OfEveryRank) {
  TempDir dir;
  const std::vector<Shape> shapes = {{}, {1}, {7}, {1, 1}, {3, 5}, {2, 3, 4}, {0, 4}};
  uint32_t seed = 1;
  for (DType dtype : {DType::kF32, DType::kF16}) {
    for (const Shape& shape : shapes) {
      const Tensor want = RandomTensor(dtype, shape, seed++);
      const std::string path = dir.File(absl::StrCat("t", seed, ".npy"));
      ASSERT_TRUE(WriteNpy(path, want.view()).ok());
      absl::StatusOr<Tensor> got = ReadNpy(path);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->dtype(), dtype);
      EXPECT_EQ(got->shape(), shape);
      ASSERT_EQ(got->byte_size(), want.byte_size());
      EXPECT_EQ(std::memcmp(got->data(), want.data(), want.byte_size()), 0);
    }
  }
}

TEST(NpyTest, WritesTheHeaderNumPyWrites) {
  TempDir dir;
  const Tensor t = RandomTensor(DType::kF32, {3, 4}, 7);
  ASSERT_TRUE(WriteNpy(dir.File("x.npy"), t.view()).ok());
  const std::string bytes = ReadBytes(dir.File("x.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len =
      static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  const std::string header = bytes.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 0), 0u)
      << header;
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(bytes.size(), 10 + header_len + 48);

  ASSERT_TRUE(WriteNpy(dir.File("v.npy"), RandomTensor(DType::kF16, {5}, 8).view()).ok());
  EXPECT_THAT(ReadBytes(dir.File("v.npy")), HasSubstr("'descr': '<f2'"));
  EXPECT_THAT(ReadBytes(dir.File("v.npy")), HasSubstr("'shape': (5,)"));
}

TEST(NpyTest, ReadsHeadersOtherWritersProduce) {
  TempDir dir;
  const std::string data(2 * 3 * 4, '\x01');
  const char* headers[] = {
      "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",         // other key order
      "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}",  // double quotes
      "{'descr':'<f4','fortran_order':False,'shape':(2L, 3L),}",           // Python 2 longs
  };
  for (const char* header : headers) {
    WriteBytes(dir.File("x.npy"), NpyBytes(header, data));
    absl::StatusOr<Tensor> t = ReadNpy(dir.File("x.npy"));
    ASSERT_TRUE(t.ok()) << header << ": " << t.status();
    EXPECT_EQ(t->shape(), (Shape{2, 3}));
  }
  // Versions 2.0 and 3.0 have a 4-byte header length.
  for (int major : {2, 3}) {
    WriteBytes(dir.File("x.npy"),
               NpyBytes("{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }",
                        std::string(6, '\0'), major));
    absl::StatusOr<Tensor> t = ReadNpy(dir.File("x.npy"));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->dtype(), DType::kF16);
    EXPECT_EQ(t->shape(), (Shape{3}));
  }
  // Fortran order of a 1-D array is the same layout as C order.
  WriteBytes(dir.File("x.npy"), NpyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
                                         std::string(8, '\0')));
  EXPECT_TRUE(ReadNpy(dir.File("x.npy")).ok());
}

TEST(NpyTest, RejectsFortranOrder) {
  TempDir dir;
  WriteBytes(dir.File("f.npy"),
             NpyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                      std::string(24, '\0')));
  ExpectReadError(dir.File("f.npy"), "Fortran-ordered array, want C order");
}

TEST(NpyTest, RejectsOtherDTypesNamingThem) {
  TempDir dir;
  const struct {
    const char* descr;
    int size;
    const char* want;
  } cases[] = {{"<f8", 8, "'<f8' (float64), want float32 '<f4' or float16 '<f2'"},
               {"<i4", 4, "(int32)"},
               {"|u1", 1, "(uint8)"},
               {"|b1", 1, "(bool)"},
               {"<c8", 8, "(complex64)"},
               {"<U3", 12, "'<U3'"},
               {">f4", 4, "big-endian float32"},
               {">f2", 2, "big-endian float16"}};
  for (const auto& c : cases) {
    WriteBytes(dir.File("d.npy"),
               NpyBytes(absl::StrCat("{'descr': '", c.descr,
                                     "', 'fortran_order': False, 'shape': (2,), }"),
                        std::string(2 * c.size, '\0')));
    SCOPED_TRACE(c.descr);
    ExpectReadError(dir.File("d.npy"), c.want);
  }
}

TEST(NpyTest, RejectsTruncatedFiles) {
  TempDir dir;
  const Tensor t = RandomTensor(DType::kF32, {4, 4}, 3);
  ASSERT_TRUE(WriteNpy(dir.File("full.npy"), t.view()).ok());
  const std::string full = ReadBytes(dir.File("full.npy"));
  // Data cut short.
  WriteBytes(dir.File("short.npy"), full.substr(0, full.size() - 5));
  ExpectReadError(dir.File("short.npy"),
                  "is truncated: its header says shape (4, 4) f32 (64 bytes");
  // Header cut short.
  WriteBytes(dir.File("header.npy"), full.substr(0, 40));
  ExpectReadError(dir.File("header.npy"), "is truncated");
  // Shorter than the preamble.
  WriteBytes(dir.File("tiny.npy"), full.substr(0, 7));
  ExpectReadError(dir.File("tiny.npy"), "not a .npy file: it has 7 bytes, want at least 10");
  WriteBytes(dir.File("empty.npy"), "");
  ExpectReadError(dir.File("empty.npy"), "not a .npy file");
}

TEST(NpyTest, RejectsBytesAfterTheData) {
  TempDir dir;
  ASSERT_TRUE(WriteNpy(dir.File("x.npy"), RandomTensor(DType::kF32, {2}, 1).view()).ok());
  WriteBytes(dir.File("long.npy"), ReadBytes(dir.File("x.npy")) + "junk");
  ExpectReadError(dir.File("long.npy"), "has 4 bytes after the data");
}

TEST(NpyTest, RejectsBadMagicAndVersions) {
  TempDir dir;
  WriteBytes(dir.File("m.npy"), "PK\x03\x04 this is a zip file, not npy");
  ExpectReadError(dir.File("m.npy"), "not a .npy file: it does not start with \\x93NUMPY");
  std::string v4 =
      NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0'));
  v4[6] = 4;
  WriteBytes(dir.File("v.npy"), v4);
  ExpectReadError(dir.File("v.npy"), "format version 4.0, want 1.0, 2.0 or 3.0");
  std::string huge = "\x93NUMPY";
  huge += std::string("\x02\x00", 2) + LittleEndian(0x7fffffff, 4) + "{";
  WriteBytes(dir.File("h.npy"), huge);
  ExpectReadError(dir.File("h.npy"), "header of 2147483647 bytes, want at most");
}

TEST(NpyTest, RejectsBadHeaders) {
  TempDir dir;
  const struct {
    const char* header;
    const char* want;
  } cases[] = {
      {"not a dict", "want '{'"},
      {"{'descr': '<f4', 'shape': (2,)}", "missing key fortran_order"},
      {"{'descr': '<f4', 'fortran_order': False}", "missing key shape"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
       "unexpected key 'extra'"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", "tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", "non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", "want ',' or ')'"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", "dtype string"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} tail", "nothing after"},
      {"{'descr': '<f4' 'fortran_order': False}", "want ',' or '}'"},
      {"{'descr: '<f4'}", "want ':'"},
  };
  for (const auto& c : cases) {
    WriteBytes(dir.File("b.npy"), NpyBytes(c.header, std::string(8, '\0')));
    SCOPED_TRACE(c.header);
    ExpectReadError(dir.File("b.npy"), c.want);
  }
}

TEST(NpyTest, RejectsShapesWhoseSizeOverflows) {
  TempDir dir;
  WriteBytes(dir.File("o.npy"), NpyBytes("{'descr': '<f4', 'fortran_order': False, "
                                         "'shape': (4611686018427387904, 4611686018427387904), }",
                                         ""));
  ExpectReadError(dir.File("o.npy"), "too large");
  WriteBytes(
      dir.File("o2.npy"),
      NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }", ""));
  ExpectReadError(dir.File("o2.npy"), "too large");
  WriteBytes(
      dir.File("big.npy"),
      NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", "abcd"));
  ExpectReadError(dir.File("big.npy"), "is truncated");
}

TEST(NpyTest, MissingFileIsNotFoundAndNamesIt) {
  TempDir dir;
  absl::StatusOr<Tensor> t = ReadNpy(dir.File("missing.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr("missing.npy"));
  EXPECT_THAT(t.status().message(), HasSubstr("No such file"));
  t = ReadNpy(dir.path().string());
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("not a regular file"));
}

TEST(NpyTest, WriteRejectsBFloat16AndBadPathsWithoutLeavingFiles) {
  TempDir dir;
  const Tensor bf = RandomTensor(DType::kBF16, {2}, 1);
  absl::Status s = WriteNpy(dir.File("b.npy"), bf.view());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("f32 or f16, not bf16"));
  EXPECT_FALSE(std::filesystem::exists(dir.File("b.npy")));

  s = WriteNpy(dir.File("no/such/dir/y.npy"), RandomTensor(DType::kF32, {2}, 1).view());
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("no/such/dir/y.npy"));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(NpyTest, OverwritesAnExistingFile) {
  TempDir dir;
  ASSERT_TRUE(WriteNpy(dir.File("x.npy"), RandomTensor(DType::kF32, {100}, 1).view()).ok());
  const Tensor small = RandomTensor(DType::kF16, {3}, 2);
  ASSERT_TRUE(WriteNpy(dir.File("x.npy"), small.view()).ok());
  absl::StatusOr<Tensor> t = ReadNpy(dir.File("x.npy"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shape(), (Shape{3}));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

}  // namespace
}  // namespace atp::cli
