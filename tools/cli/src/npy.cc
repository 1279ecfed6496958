#include "atp/cli/npy.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "atp/formats/input_file.h"
#include "file_util.h"

namespace atp::cli {
namespace {

using kernels::DType;
using kernels::Shape;
using kernels::Tensor;
using kernels::TensorView;

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// NumPy itself refuses headers above 10000 bytes by default; allow generous room but stay bounded.
constexpr uint32_t kMaxHeaderBytes = 1 << 20;

// Header text shortened and made printable for an error message.
std::string Excerpt(absl::string_view text) {
  std::string out;
  for (char c : text.substr(0, 80)) {
    out.push_back(absl::ascii_isprint(static_cast<unsigned char>(c)) ? c : '?');
  }
  if (text.size() > 80) out += "...";
  return out;
}

// The header dictionary: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// Parses the Python literal that NumPy writes (a dict of a string, a bool and a tuple of ints).
class HeaderParser {
 public:
  HeaderParser(absl::string_view text, absl::string_view path) : text_(text), path_(path) {}

  absl::StatusOr<NpyHeader> Parse() {
    NpyHeader header;
    bool have_descr = false, have_fortran = false, have_shape = false;
    SkipSpace();
    if (!Consume('{')) return Error("want '{' opening the header dictionary");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      std::string key;
      if (!ParseString(&key)) return Error("want a quoted key");
      SkipSpace();
      if (!Consume(':')) return Error(absl::StrCat("want ':' after '", key, "'"));
      SkipSpace();
      if (key == "descr") {
        if (!ParseString(&header.descr)) {
          return Error("want 'descr' to be a quoted dtype string such as '<f4'");
        }
        have_descr = true;
      } else if (key == "fortran_order") {
        if (ConsumeWord("True")) {
          header.fortran_order = true;
        } else if (ConsumeWord("False")) {
          header.fortran_order = false;
        } else {
          return Error("want 'fortran_order' to be True or False");
        }
        have_fortran = true;
      } else if (key == "shape") {
        if (auto s = ParseShape(&header.shape); !s.ok()) return s;
        have_shape = true;
      } else {
        return Error(absl::StrCat("unexpected key '", key, "', want descr, fortran_order, shape"));
      }
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume('}')) break;
      return Error("want ',' or '}'");
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("want nothing after the header dictionary");
    if (!have_descr || !have_fortran || !have_shape) {
      std::vector<std::string> missing;
      if (!have_descr) missing.push_back("descr");
      if (!have_fortran) missing.push_back("fortran_order");
      if (!have_shape) missing.push_back("shape");
      return Error(absl::StrCat("missing key ", absl::StrJoin(missing, ", ")));
    }
    return header;
  }

 private:
  absl::Status ParseShape(Shape* shape) {
    if (!Consume('(')) return Error("want 'shape' to be a tuple such as (3, 4)");
    while (true) {
      SkipSpace();
      if (Consume(')')) return absl::OkStatus();
      const size_t start = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) {
        ++pos_;
      }
      int64_t dim;
      if (pos_ == start || !absl::SimpleAtoi(text_.substr(start, pos_ - start), &dim)) {
        return Error("want a non-negative integer dimension in 'shape'");
      }
      Consume('L');  // Python 2 long suffix, seen in old files.
      shape->push_back(dim);
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume(')')) return absl::OkStatus();
      return Error("want ',' or ')' in 'shape'");
    }
  }

  bool ParseString(std::string* out) {
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) return false;
    const char quote = text_[pos_++];
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') return false;
      ++pos_;
    }
    if (pos_ >= text_.size()) return false;
    *out = std::string(text_.substr(start, pos_ - start));
    ++pos_;
    return true;
  }

  bool ConsumeWord(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\t' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  absl::Status Error(absl::string_view want) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": bad .npy header at character ", pos_,
                                                   ": ", want, " (header: ", Excerpt(text_), ")"));
  }

  absl::string_view text_;
  absl::string_view path_;
  size_t pos_ = 0;
};

// A readable name for a NumPy type code ("f8" → "float64").
std::string TypeCodeName(absl::string_view code) {
  static const struct {
    const char* code;
    const char* name;
  } kNames[] = {{"f8", "float64"}, {"f4", "float32"},   {"f2", "float16"},    {"f16", "float128"},
                {"i1", "int8"},    {"i2", "int16"},     {"i4", "int32"},      {"i8", "int64"},
                {"u1", "uint8"},   {"u2", "uint16"},    {"u4", "uint32"},     {"u8", "uint64"},
                {"b1", "bool"},    {"c8", "complex64"}, {"c16", "complex128"}};
  for (const auto& n : kNames) {
    if (code == n.code) return n.name;
  }
  return std::string(code);
}

absl::StatusOr<DType> DTypeFromDescr(absl::string_view descr, absl::string_view path) {
  if (descr == "<f4") return DType::kF32;
  if (descr == "<f2") return DType::kF16;
  if (!descr.empty() && descr[0] == '>' && (descr == ">f4" || descr == ">f2")) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " holds big-endian ", TypeCodeName(descr.substr(1)), " ('", descr,
                     "'), want little-endian '<f4' or '<f2' (convert with x.astype('<f4'))"));
  }
  std::string name(descr);
  if (!descr.empty() &&
      (descr[0] == '<' || descr[0] == '>' || descr[0] == '|' || descr[0] == '=')) {
    name = TypeCodeName(descr.substr(1));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, " holds dtype '", Excerpt(descr), "' (", Excerpt(name),
                   "), want float32 '<f4' or float16 '<f2' (convert with x.astype(np.float32))"));
}

std::string PythonShape(const Shape& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

}  // namespace

absl::StatusOr<Tensor> ReadNpy(const std::string& path) {
  absl::StatusOr<formats::InputFile> opened = formats::InputFile::Open(path);
  if (!opened.ok()) return opened.status();
  formats::InputFile& file = *opened;

  unsigned char prefix[10];
  if (file.size() < sizeof prefix) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a .npy file: it has ",
                                                   file.size(), " bytes, want at least 10"));
  }
  if (auto s = file.ReadAt(0, prefix, sizeof prefix, "the .npy preamble"); !s.ok()) return s;
  if (std::memcmp(prefix, kMagic, kMagicSize) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a .npy file: it does not start with \\x93NUMPY"));
  }
  const int major = prefix[6];
  const int minor = prefix[7];
  uint64_t header_len;
  uint64_t header_start;
  if (major == 1) {
    header_len = prefix[8] | (static_cast<uint32_t>(prefix[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    unsigned char len4[4];
    if (auto s = file.ReadAt(8, len4, 4, "the .npy header length"); !s.ok()) return s;
    header_len = len4[0] | (static_cast<uint32_t>(len4[1]) << 8) |
                 (static_cast<uint32_t>(len4[2]) << 16) | (static_cast<uint32_t>(len4[3]) << 24);
    header_start = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, " has .npy format version ", major, ".",
                                                   minor, ", want 1.0, 2.0 or 3.0"));
  }
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " has a .npy header of ", header_len,
                                                   " bytes, want at most ", kMaxHeaderBytes));
  }
  std::string header_text(header_len, '\0');
  if (auto s = file.ReadAt(header_start, header_text.data(), header_len, "the .npy header");
      !s.ok()) {
    return s;
  }
  absl::StatusOr<NpyHeader> header = HeaderParser(header_text, path).Parse();
  if (!header.ok()) return header.status();
  absl::StatusOr<DType> dtype = DTypeFromDescr(header->descr, path);
  if (!dtype.ok()) return dtype.status();
  if (header->fortran_order && header->shape.size() >= 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     " holds a Fortran-ordered array, want C order (save "
                     "np.ascontiguousarray(x))"));
  }

  // Element and byte counts, refusing any overflow before allocating.
  uint64_t elements = 1;
  for (int64_t d : header->shape) {
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(d), &elements)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " has shape ", PythonShape(header->shape), ", which is too large"));
    }
  }
  uint64_t data_bytes;
  if (__builtin_mul_overflow(elements, static_cast<uint64_t>(kernels::DTypeSize(*dtype)),
                             &data_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " has shape ", PythonShape(header->shape), ", which is too large"));
  }
  const uint64_t data_start = header_start + header_len;
  const uint64_t available = file.size() - std::min(file.size(), data_start);
  if (available < data_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is truncated: its header says shape ", PythonShape(header->shape), " ",
        kernels::DTypeName(*dtype), " (", data_bytes, " bytes of data), the file has ", available));
  }
  if (available > data_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " has ", available - data_bytes, " bytes after the data of shape ",
                     PythonShape(header->shape), " ", kernels::DTypeName(*dtype), ", want none"));
  }
  Tensor tensor(*dtype, header->shape);
  if (auto s = file.ReadAt(data_start, tensor.data(), data_bytes, "array data"); !s.ok()) return s;
  return tensor;
}

absl::Status WriteNpy(const std::string& path, const TensorView& tensor) {
  const char* descr;
  switch (tensor.dtype) {
    case DType::kF32:
      descr = "<f4";
      break;
    case DType::kF16:
      descr = "<f2";
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("cannot write ", path,
                                                     ": .npy files hold f32 or f16, not ",
                                                     kernels::DTypeName(tensor.dtype)));
  }
  std::string header =
      absl::StrCat("{'descr': '", descr,
                   "', 'fortran_order': False, 'shape': ", PythonShape(tensor.shape), ", }");
  // Pad with spaces and end with '\n' so that the data starts at a multiple of 64 bytes.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write ", path, ": shape ", PythonShape(tensor.shape), " is too long"));
  }
  std::string preamble(kMagic, kMagicSize);
  preamble.push_back('\x01');
  preamble.push_back('\x00');
  preamble.push_back(static_cast<char>(header.size() & 0xff));
  preamble.push_back(static_cast<char>(header.size() >> 8));
  const absl::string_view data(static_cast<const char*>(tensor.data), tensor.byte_size());
  const absl::string_view pieces[] = {preamble, header, data};
  return WriteFileAtomically(path, pieces);
}

}  // namespace atp::cli
