#include "safetensors_reader.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"

namespace atp::client::internal {
namespace {

// A JSON value: null/bool, number, string, array or object. Enough of RFC 8259 for safetensors
// headers.
struct Json {
  std::variant<std::monostate, bool, double, std::string, std::vector<Json>,
               std::map<std::string, Json>>
      v;
  const std::string* str() const { return std::get_if<std::string>(&v); }
  const double* num() const { return std::get_if<double>(&v); }
  const std::vector<Json>* arr() const { return std::get_if<std::vector<Json>>(&v); }
  const std::map<std::string, Json>* obj() const {
    return std::get_if<std::map<std::string, Json>>(&v);
  }
};

class JsonParser {
 public:
  explicit JsonParser(absl::string_view text) : s_(text) {}

  absl::StatusOr<Json> ParseDocument() {
    Json value;
    if (!ParseValue(&value, 0)) return Error();
    SkipSpace();
    if (pos_ != s_.size()) {
      error_ = "text after the JSON value";
      return Error();
    }
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  absl::Status Error() const {
    return absl::InvalidArgumentError(
        absl::StrCat("header is not valid JSON at byte ", pos_, ": ", error_));
  }
  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Fail(const char* what) {
    error_ = what;
    return false;
  }
  bool Literal(absl::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return Fail("unknown literal");
    pos_ += word.size();
    return true;
  }

  bool ParseValue(Json* out, int depth) {
    if (depth > kMaxDepth) return Fail("nested too deeply");
    SkipSpace();
    if (pos_ >= s_.size()) return Fail("unexpected end");
    const char c = s_[pos_];
    if (c == '{') return ParseObject(out, depth);
    if (c == '[') return ParseArray(out, depth);
    if (c == '"') {
      std::string str;
      if (!ParseString(&str)) return false;
      out->v = std::move(str);
      return true;
    }
    if (c == 't') {
      out->v = true;
      return Literal("true");
    }
    if (c == 'f') {
      out->v = false;
      return Literal("false");
    }
    if (c == 'n') {
      out->v = std::monostate{};
      return Literal("null");
    }
    return ParseNumber(out);
  }

  bool ParseNumber(Json* out) {
    const size_t start = pos_;
    while (pos_ < s_.size() &&
           (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '-' ||
            s_[pos_] == '+' || s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
    }
    if (start == pos_) return Fail("expected a value");
    const std::string text(s_.substr(start, pos_ - start));
    char* end = nullptr;
    const double d = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) return Fail("malformed number");
    out->v = d;
    return true;
  }

  bool ParseString(std::string* out) {
    ++pos_;  // opening quote
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          if (pos_ + 4 > s_.size()) return Fail("truncated \\u escape");
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = s_[pos_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') {
              cp |= h - '0';
            } else if (h >= 'a' && h <= 'f') {
              cp |= h - 'a' + 10;
            } else if (h >= 'A' && h <= 'F') {
              cp |= h - 'A' + 10;
            } else {
              return Fail("bad \\u escape");
            }
          }
          // UTF-8 of the code point (surrogate pairs are kept as two 3-byte sequences; names in
          // layer files are ASCII).
          if (cp < 0x80) {
            out->push_back(static_cast<char>(cp));
          } else if (cp < 0x800) {
            out->push_back(static_cast<char>(0xc0 | cp >> 6));
            out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          } else {
            out->push_back(static_cast<char>(0xe0 | cp >> 12));
            out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
            out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          }
          break;
        }
        default:
          return Fail("bad escape");
      }
    }
    return Fail("unterminated string");
  }

  bool ParseArray(Json* out, int depth) {
    ++pos_;
    std::vector<Json> items;
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      out->v = std::move(items);
      return true;
    }
    while (true) {
      Json item;
      if (!ParseValue(&item, depth + 1)) return false;
      items.push_back(std::move(item));
      SkipSpace();
      if (pos_ >= s_.size()) return Fail("unterminated array");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        out->v = std::move(items);
        return true;
      }
      return Fail("expected , or ] in an array");
    }
  }

  bool ParseObject(Json* out, int depth) {
    ++pos_;
    std::map<std::string, Json> members;
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      out->v = std::move(members);
      return true;
    }
    while (true) {
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Fail("expected a member name");
      std::string key;
      if (!ParseString(&key)) return false;
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Fail("expected : after a member name");
      ++pos_;
      Json value;
      if (!ParseValue(&value, depth + 1)) return false;
      if (!members.emplace(std::move(key), std::move(value)).second) {
        return Fail("duplicate member name");
      }
      SkipSpace();
      if (pos_ >= s_.size()) return Fail("unterminated object");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == '}') {
        ++pos_;
        out->v = std::move(members);
        return true;
      }
      return Fail("expected , or } in an object");
    }
  }

  absl::string_view s_;
  size_t pos_ = 0;
  const char* error_ = "";
};

bool AsUint(const Json& j, uint64_t* out) {
  const double* d = j.num();
  if (d == nullptr || *d < 0 || *d > 9.0e15 ||
      *d != static_cast<double>(static_cast<uint64_t>(*d))) {
    return false;
  }
  *out = static_cast<uint64_t>(*d);
  return true;
}

}  // namespace

absl::StatusOr<SafetensorsContents> ReadSafetensorsFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (file_size < 8) return bad("not a .safetensors file (shorter than its 8-byte header length)");
  uint8_t len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | len_bytes[i];
  if (header_len > file_size - 8 || header_len > (uint64_t{100} << 20)) {
    return bad(
        absl::StrCat("header length ", header_len, " exceeds the file (", file_size, " bytes)"));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) return bad("truncated header");
  absl::StatusOr<Json> json = JsonParser(header).ParseDocument();
  if (!json.ok()) return bad(json.status().message());
  const auto* root = json->obj();
  if (root == nullptr) return bad("header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  SafetensorsContents out;
  for (const auto& [name, value] : *root) {
    if (name == "__metadata__") {
      const auto* meta = value.obj();
      if (meta == nullptr) return bad("__metadata__ is not an object");
      for (const auto& [k, v] : *meta) {
        if (v.str() == nullptr) return bad(absl::StrCat("__metadata__ ", k, " is not a string"));
        out.metadata[k] = *v.str();
      }
      continue;
    }
    const auto* entry = value.obj();
    auto field = [&](const char* key) -> const Json* {
      if (entry == nullptr) return nullptr;
      auto it = entry->find(key);
      return it == entry->end() ? nullptr : &it->second;
    };
    const Json* dtype_j = field("dtype");
    const Json* shape_j = field("shape");
    const Json* offsets_j = field("data_offsets");
    if (dtype_j == nullptr || dtype_j->str() == nullptr || shape_j == nullptr ||
        shape_j->arr() == nullptr || offsets_j == nullptr || offsets_j->arr() == nullptr ||
        offsets_j->arr()->size() != 2) {
      return bad(absl::StrCat("tensor ", name,
                              " lacks a string dtype, an array shape or two data_offsets"));
    }
    DType dtype;
    if (*dtype_j->str() == "F32") {
      dtype = DType::kF32;
    } else if (*dtype_j->str() == "F16") {
      dtype = DType::kF16;
    } else if (*dtype_j->str() == "BF16") {
      dtype = DType::kBF16;
    } else {
      return bad(
          absl::StrCat("tensor ", name, " has dtype ", *dtype_j->str(), ", want F32, F16 or BF16"));
    }
    Shape shape;
    for (const Json& d : *shape_j->arr()) {
      uint64_t v;
      if (!AsUint(d, &v) || v < 1 || v > (uint64_t{1} << 40)) {
        return bad(absl::StrCat("tensor ", name, " has a dimension that is not an integer >= 1"));
      }
      shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t begin, end;
    if (!AsUint((*offsets_j->arr())[0], &begin) || !AsUint((*offsets_j->arr())[1], &end) ||
        begin > end || end > data_size) {
      return bad(absl::StrCat("tensor ", name, " has data_offsets outside the data section (",
                              data_size, " bytes)"));
    }
    uint64_t want = DTypeSize(dtype);
    for (int64_t d : shape) {
      if (want > (uint64_t{1} << 50) / static_cast<uint64_t>(d)) {
        return bad(absl::StrCat("tensor ", name, " has shape ", ShapeString(shape), ", too large"));
      }
      want *= static_cast<uint64_t>(d);
    }
    if (end - begin != want) {
      return bad(absl::StrCat("tensor ", name, " has ", end - begin, " bytes, want ", want, " for ",
                              DTypeName(dtype), " ", ShapeString(shape)));
    }
    Tensor t(dtype, shape);
    in.seekg(static_cast<std::streamoff>(data_start + begin));
    in.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(want));
    if (!in) return bad(absl::StrCat("truncated data of tensor ", name));
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace atp::client::internal
