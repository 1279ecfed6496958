#include "atp/cli/safetensors.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "file_util.h"
#include "json.h"

namespace atp::cli {
namespace {

using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

absl::string_view SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin;
  uint64_t end;
};

absl::StatusOr<Entry> ParseEntry(const std::string& name, const JsonValue& value,
                                 absl::string_view path) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", JsonQuote(name), " ", what));
  };
  if (!value.is_object()) {
    return bad(absl::StrCat("is a JSON ", JsonTypeName(value.type),
                            ", want an object with dtype, shape and data_offsets"));
  }
  Entry entry;
  entry.name = name;
  const JsonValue* dtype = value.Find("dtype");
  if (dtype == nullptr || !dtype->is_string()) return bad("has no dtype string");
  if (dtype->text == "F32") {
    entry.dtype = DType::kF32;
  } else if (dtype->text == "F16") {
    entry.dtype = DType::kF16;
  } else if (dtype->text == "BF16") {
    entry.dtype = DType::kBF16;
  } else {
    return bad(absl::StrCat("has dtype ", JsonQuote(dtype->text), ", want F32, F16 or BF16"));
  }
  const JsonValue* shape = value.Find("shape");
  if (shape == nullptr || !shape->is_array()) return bad("has no shape array");
  for (const JsonValue& dim : shape->array) {
    uint64_t d;
    if (!dim.AsUint64(&d) || d > static_cast<uint64_t>(INT64_MAX)) {
      return bad("has a shape entry that is not a non-negative integer");
    }
    entry.shape.push_back(static_cast<int64_t>(d));
  }
  const JsonValue* offsets = value.Find("data_offsets");
  if (offsets == nullptr || !offsets->is_array() || offsets->array.size() != 2 ||
      !offsets->array[0].AsUint64(&entry.begin) || !offsets->array[1].AsUint64(&entry.end)) {
    return bad("has no data_offsets [begin, end] of two non-negative integers");
  }
  if (entry.begin > entry.end) {
    return bad(
        absl::StrCat("has data_offsets [", entry.begin, ", ", entry.end, "], want begin <= end"));
  }
  uint64_t bytes = kernels::DTypeSize(entry.dtype);
  for (int64_t d : entry.shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
      return bad(
          absl::StrCat("has shape ", kernels::ShapeString(entry.shape), ", which is too large"));
    }
  }
  if (entry.end - entry.begin != bytes) {
    return bad(absl::StrCat("has shape ", kernels::ShapeString(entry.shape), " ", dtype->text, " (",
                            bytes, " bytes) but data_offsets [", entry.begin, ", ", entry.end,
                            "] span ", entry.end - entry.begin, " bytes"));
  }
  return entry;
}

}  // namespace

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  absl::StatusOr<InputFile> opened = InputFile::Open(path);
  if (!opened.ok()) return opened.status();
  InputFile& file = *opened;
  if (file.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a .safetensors file: it has ",
                                                   file.size(), " bytes, want at least 8"));
  }
  unsigned char len8[8];
  if (auto s = file.ReadAt(0, len8, 8, "the header length"); !s.ok()) return s;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len8[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a .safetensors file: its header length is ", header_len,
                     " bytes, want at most ", kMaxSafetensorsHeaderBytes));
  }
  if (header_len > file.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is truncated: its header length is ",
                                                   header_len, " bytes, the file has ",
                                                   file.size() - 8, " after the length"));
  }
  std::string header_text(header_len, '\0');
  if (auto s = file.ReadAt(8, header_text.data(), header_len, "the header"); !s.ok()) return s;
  absl::StatusOr<JsonValue> header = ParseJson(header_text);
  if (!header.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": bad .safetensors header: ", header.status().message()));
  }
  if (!header->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad .safetensors header: it is a JSON ",
                                                   JsonTypeName(header->type), ", want an object"));
  }

  SafetensorsFile result;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header->object) {
    if (name == "__metadata__") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": __metadata__ is a JSON ", JsonTypeName(value.type), ", want an object"));
      }
      for (const auto& [key, v] : value.object) {
        if (!v.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ value of ",
                                                         JsonQuote(key), " is a JSON ",
                                                         JsonTypeName(v.type), ", want a string"));
        }
        result.metadata.emplace(key, v.text);
      }
      continue;
    }
    absl::StatusOr<Entry> entry = ParseEntry(name, value, path);
    if (!entry.ok()) return entry.status();
    entries.push_back(*std::move(entry));
  }

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file.size() - data_start;
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.end > data_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is truncated: tensor ", JsonQuote(e.name), " ends at byte ", e.end,
                       " of the data section, which has ", data_size, " bytes"));
    }
    if (i > 0 && e.begin < entries[i - 1].end) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensors ",
                                                     JsonQuote(entries[i - 1].name), " and ",
                                                     JsonQuote(e.name), " overlap"));
    }
  }
  for (Entry& e : entries) {
    Tensor t(e.dtype, e.shape);
    if (auto s = file.ReadAt(data_start + e.begin, t.data(), e.end - e.begin,
                             absl::StrCat("tensor ", e.name));
        !s.ok()) {
      return s;
    }
    result.tensors.emplace(std::move(e.name), std::move(t));
  }
  return result;
}

absl::Status WriteSafetensors(const std::string& path, const kernels::WeightMap& tensors,
                              const Metadata& metadata) {
  std::vector<std::string> members;
  if (!metadata.empty()) {
    std::vector<std::string> items;
    for (const auto& [key, value] : metadata) {
      items.push_back(absl::StrCat(JsonQuote(key), ":", JsonQuote(value)));
    }
    members.push_back(absl::StrCat("\"__metadata__\":{", absl::StrJoin(items, ","), "}"));
  }
  uint64_t offset = 0;
  std::vector<absl::string_view> data_pieces;
  static const char kZeros[8] = {};
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write ", path, ": tensor name ", JsonQuote(name), " is reserved"));
    }
    const uint64_t begin = offset;
    const uint64_t end = begin + tensor.byte_size();
    members.push_back(absl::StrCat(
        JsonQuote(name), ":{\"dtype\":\"", SafetensorsDTypeName(tensor.dtype()), "\",\"shape\":[",
        absl::StrJoin(tensor.shape(), ","), "],\"data_offsets\":[", begin, ",", end, "]}"));
    data_pieces.emplace_back(static_cast<const char*>(tensor.data()), tensor.byte_size());
    const uint64_t pad = (8 - end % 8) % 8;
    if (pad > 0) data_pieces.emplace_back(kZeros, pad);
    offset = end + pad;
  }
  std::string header = absl::StrCat("{", absl::StrJoin(members, ","), "}");
  // Pad the header with spaces so that the data section starts 8-byte aligned.
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string len8(8, '\0');
  for (int i = 0; i < 8; ++i) len8[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  std::vector<absl::string_view> pieces = {len8, header};
  pieces.insert(pieces.end(), data_pieces.begin(), data_pieces.end());
  return WriteFileAtomically(path, pieces);
}

}  // namespace atp::cli
