// The shared .safetensors reader (client SDK and atp CLI): every dtype and shape it reads, and one
// clear line for every kind of bad file. Files are written byte by byte here, independently of
// any writer.
#include "atp/formats/safetensors.h"

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "atp/formats/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_files.h"

namespace atp::formats {
namespace {

using ::atp::formats::testing::LittleEndian;
using ::atp::formats::testing::TempDir;
using ::atp::formats::testing::WriteBytes;
using ::testing::HasSubstr;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// A .safetensors file with JSON `header` and `data`.
std::string FileBytes(absl::string_view header, absl::string_view data) {
  return absl::StrCat(LittleEndian(header.size(), 8), header, data);
}

void ExpectOpenError(const std::string& path, absl::string_view want) {
  absl::StatusOr<SafetensorsReader> f = SafetensorsReader::Open(path);
  ASSERT_FALSE(f.ok()) << "open succeeded, want error containing: " << want;
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr(path));
  EXPECT_THAT(f.status().message(), HasSubstr(want));
  EXPECT_FALSE(absl::StrContains(f.status().message(), "\n")) << f.status();
}

TEST(SafetensorsReaderTest, ReadsEveryDTypeAndShapeIntoTheCallersBuffers) {
  TempDir dir;
  struct Want {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  // Out of data order in the header, with a gap (alignment padding) between two tensors, a
  // scalar, an empty tensor and a name that needs escaping.
  const std::vector<Want> want = {
      {"q_proj.bias", DType::kF16, {3}, 24, 30},
      {"q_proj.weight", DType::kF32, {2, 3}, 0, 24},
      {"k", DType::kBF16, {2, 1, 2}, 32, 40},
      {"scalar", DType::kF32, {}, 40, 44},
      {"empty", DType::kF32, {0, 3}, 44, 44},
      {"odd \"name\" \\ \xc3\xa9", DType::kF16, {1}, 44, 46},
  };
  std::string header = "{\"__metadata__\":{\"num_heads\":\"4\",\"note\":\"a \\\"b\\\"\\n\"}";
  for (const Want& w : want) {
    absl::StrAppend(&header, ",", JsonQuote(w.name), ":{\"dtype\":\"", DTypeName(w.dtype),
                    "\",\"shape\":", ShapeString(w.shape), ",\"data_offsets\":[", w.begin, ",",
                    w.end, "]}");
  }
  header += "}";
  const std::string data = RandomBytes(46, 1);
  WriteBytes(dir.File("l.safetensors"), FileBytes(header, data));

  absl::StatusOr<SafetensorsReader> file = SafetensorsReader::Open(dir.File("l.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->path(), dir.File("l.safetensors"));
  EXPECT_EQ(file->metadata(), (Metadata{{"num_heads", "4"}, {"note", "a \"b\"\n"}}));
  ASSERT_EQ(file->tensors().size(), want.size());
  for (size_t i = 1; i < file->tensors().size(); ++i) {
    EXPECT_LE(file->tensors()[i - 1].begin, file->tensors()[i].begin) << "not in data order";
  }
  for (const Want& w : want) {
    SCOPED_TRACE(w.name);
    const TensorEntry* e = file->Find(w.name);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->dtype, w.dtype);
    EXPECT_EQ(e->shape, w.shape);
    EXPECT_EQ(e->begin, w.begin);
    EXPECT_EQ(e->end, w.end);
    std::string got(e->byte_size() + 1, '\x5a');  // poisoned, one byte beyond
    ASSERT_TRUE(file->Read(*e, got.data()).ok());
    EXPECT_EQ(got.substr(0, e->byte_size()), data.substr(w.begin, w.end - w.begin));
    EXPECT_EQ(got.back(), '\x5a') << "wrote beyond the tensor";
  }
  EXPECT_EQ(file->Find("missing"), nullptr);
}

TEST(SafetensorsReaderTest, NamesAndSizesTheThreeDTypes) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(ShapeString({64, 32}), "[64,32]");
  EXPECT_EQ(ShapeString({}), "[]");
}

TEST(SafetensorsReaderTest, ReadsHeadersOtherWritersProduce) {
  TempDir dir;
  // Member order, whitespace, padding spaces and a "format" metadata key as PyTorch writes them.
  const std::string header =
      "{ \"__metadata__\" : {\"format\": \"pt\"},\n \"w\": {\"data_offsets\": [0, 8], "
      "\"shape\": [2], \"dtype\": \"F32\"} }      ";
  WriteBytes(dir.File("x.safetensors"), FileBytes(header, std::string(8, '\x01')));
  absl::StatusOr<SafetensorsReader> f = SafetensorsReader::Open(dir.File("x.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  ASSERT_NE(f->Find("w"), nullptr);
  EXPECT_EQ(f->Find("w")->shape, (Shape{2}));
}

TEST(SafetensorsReaderTest, EmptyTensorsOverlapNothing) {
  TempDir dir;
  const std::string header =
      "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"e\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[4,4]},"
      "\"v\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
  WriteBytes(dir.File("x.safetensors"), FileBytes(header, std::string(12, '\0')));
  absl::StatusOr<SafetensorsReader> f = SafetensorsReader::Open(dir.File("x.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors().size(), 3u);
}

TEST(SafetensorsReaderTest, RejectsBadFilesNamingTheProblem) {
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
      {"{\"w\": {\"dtype\": 32, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
       "tensor \"w\" has no dtype string"},
      {"{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
       "tensor \"w\" has dtype \"F64\", want F32, F16 or BF16"},
      {"{\"w\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
       "has dtype \"I32\""},
      {"{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "has no shape array"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
       "not a non-negative integer"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
       "not a non-negative integer"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}}", 4,
       "not a non-negative integer"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
       "no data_offsets [begin, end]"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, -4]}}", 4,
       "no data_offsets [begin, end]"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4,
       "want begin <= end"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8,
       "has shape [3] F32 (12 bytes) but data_offsets [0, 8] span 8 bytes"},
      {"{" + w8 + "}", 4,
       "is truncated: tensor \"w\" ends at byte 8 of the data section, which "
       "has 4 bytes"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
       "[18446744073709551612, 18446744073709551616]}}",
       4, "no data_offsets [begin, end]"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
       "[18446744073709551611, 18446744073709551615]}}",
       4, "ends at byte 18446744073709551615 of the data section"},
      {"{" + w8 + ",\"v\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}", 8,
       "tensors \"w\" and \"v\" overlap"},
      {"{\"__metadata__\": [1]}", 0, "__metadata__ is a JSON array, want an object"},
      {"{\"__metadata__\": {\"num_heads\": 4}}", 0,
       "__metadata__ value of \"num_heads\" is a JSON number, want a string"},
      {"{" + w8 + "," + w8 + "}", 8, "duplicate member name \"w\""},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], }", 8, "JSON error at byte"},
      {"not json", 0, "bad .safetensors header: JSON error at byte 0"},
      {std::string(100, '[') + std::string(100, ']'), 0, "nesting of at most 64 levels"},
      {"{\"w\": {\"dtype\": \"F32\", \"shape\": [99999999999, 99999999999, 99999999999], "
       "\"data_offsets\": [0, 4]}}",
       4, "too large"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.header);
    WriteBytes(dir.File("bad.safetensors"), FileBytes(c.header, std::string(c.data_bytes, '\0')));
    ExpectOpenError(dir.File("bad.safetensors"), c.want);
  }
}

TEST(SafetensorsReaderTest, RejectsTruncatedAndOversizeHeaders) {
  TempDir dir;
  WriteBytes(dir.File("tiny.safetensors"), "abc");
  ExpectOpenError(dir.File("tiny.safetensors"), "not a .safetensors file: it has 3 bytes");
  WriteBytes(dir.File("short.safetensors"), LittleEndian(100, 8) + "{}");
  ExpectOpenError(dir.File("short.safetensors"),
                  "is truncated: its header length is 100 bytes, the file has 2");
  WriteBytes(dir.File("huge.safetensors"), LittleEndian(~0ull, 8) + "{}");
  ExpectOpenError(dir.File("huge.safetensors"), "want at most 104857600");
  WriteBytes(dir.File("limit.safetensors"), LittleEndian(kMaxSafetensorsHeaderBytes + 1, 8));
  ExpectOpenError(dir.File("limit.safetensors"),
                  "its header length is 104857601 bytes, want at most 104857600");
}

TEST(SafetensorsReaderTest, MissingFileIsNotFoundAndADirectoryIsNotAFile) {
  TempDir dir;
  absl::StatusOr<SafetensorsReader> f = SafetensorsReader::Open(dir.File("nope.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("nope.safetensors: No such file"));
  f = SafetensorsReader::Open(dir.path().string());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("not a regular file"));
}

TEST(SafetensorsReaderTest, ReadFailsClearlyWhenTheFileShrankAfterOpen) {
  TempDir dir;
  // Larger than any stdio buffer, so that the data is read after the file shrank.
  constexpr uint64_t kBytes = 1 << 20;
  const std::string header = absl::StrCat("{\"w\":{\"dtype\":\"F32\",\"shape\":[", kBytes / 4,
                                          "],\"data_offsets\":[0,", kBytes, "]}}");
  const std::string path = dir.File("x.safetensors");
  WriteBytes(path, FileBytes(header, RandomBytes(kBytes, 2)));
  absl::StatusOr<SafetensorsReader> f = SafetensorsReader::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::filesystem::resize_file(path, 8 + header.size() + 10);
  std::vector<char> buf(kBytes);
  absl::Status s = f->Read(f->tensors()[0], buf.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(path, " is truncated")));
  EXPECT_THAT(s.message(), HasSubstr("tensor \"w\""));
}

}  // namespace
}  // namespace atp::formats
