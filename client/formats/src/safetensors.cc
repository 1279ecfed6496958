#include "atp/formats/safetensors.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "atp/formats/json.h"

namespace atp::formats {
namespace {

absl::StatusOr<TensorEntry> ParseEntry(const std::string& name, const JsonValue& value,
                                       absl::string_view path) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", JsonQuote(name), " ", what));
  };
  if (!value.is_object()) {
    return bad(absl::StrCat("is a JSON ", JsonTypeName(value.type),
                            ", want an object with dtype, shape and data_offsets"));
  }
  TensorEntry entry;
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
  uint64_t bytes = DTypeSize(entry.dtype);
  for (int64_t d : entry.shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
      return bad(absl::StrCat("has shape ", ShapeString(entry.shape), ", which is too large"));
    }
  }
  if (entry.byte_size() != bytes) {
    return bad(absl::StrCat("has shape ", ShapeString(entry.shape), " ", dtype->text, " (", bytes,
                            " bytes) but data_offsets [", entry.begin, ", ", entry.end, "] span ",
                            entry.byte_size(), " bytes"));
  }
  return entry;
}

}  // namespace

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

absl::string_view DTypeName(DType dtype) {
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

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::StatusOr<SafetensorsReader> SafetensorsReader::Open(const std::string& path) {
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

  Metadata metadata;
  std::vector<TensorEntry> entries;
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
        metadata.emplace(key, v.text);
      }
      continue;
    }
    absl::StatusOr<TensorEntry> entry = ParseEntry(name, value, path);
    if (!entry.ok()) return entry.status();
    entries.push_back(*std::move(entry));
  }

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file.size() - data_start;
  std::sort(entries.begin(), entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // The non-empty tensor that ends last so far; an empty tensor occupies no bytes to overlap.
  const TensorEntry* last = nullptr;
  for (const TensorEntry& e : entries) {
    if (e.end > data_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is truncated: tensor ", JsonQuote(e.name), " ends at byte ", e.end,
                       " of the data section, which has ", data_size, " bytes"));
    }
    if (e.byte_size() == 0) continue;
    if (last != nullptr && e.begin < last->end) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensors ", JsonQuote(last->name),
                                                     " and ", JsonQuote(e.name), " overlap"));
    }
    last = &e;
  }
  return SafetensorsReader(*std::move(opened), data_start, std::move(metadata), std::move(entries));
}

const TensorEntry* SafetensorsReader::Find(absl::string_view name) const {
  for (const TensorEntry& e : tensors_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

absl::Status SafetensorsReader::Read(const TensorEntry& entry, void* dst) {
  return file_.ReadAt(data_start_ + entry.begin, dst, entry.byte_size(),
                      absl::StrCat("tensor ", JsonQuote(entry.name)));
}

}  // namespace atp::formats
