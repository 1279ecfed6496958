#include "atp/cli/safetensors.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "atp/formats/json.h"
#include "file_util.h"

namespace atp::cli {
namespace {

using formats::JsonQuote;
using kernels::DType;

formats::DType ToFormats(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return formats::DType::kF32;
    case DType::kF16:
      return formats::DType::kF16;
    case DType::kBF16:
      return formats::DType::kBF16;
  }
  return formats::DType::kF32;
}

DType FromFormats(formats::DType dtype) {
  switch (dtype) {
    case formats::DType::kF32:
      return DType::kF32;
    case formats::DType::kF16:
      return DType::kF16;
    case formats::DType::kBF16:
      return DType::kBF16;
  }
  return DType::kF32;
}

}  // namespace

absl::StatusOr<kernels::WeightMap> ReadTensors(formats::SafetensorsReader& file) {
  kernels::WeightMap tensors;
  for (const formats::TensorEntry& entry : file.tensors()) {
    kernels::Tensor t(FromFormats(entry.dtype), entry.shape);
    if (auto s = file.Read(entry, t.data()); !s.ok()) return s;
    tensors.emplace(entry.name, std::move(t));
  }
  return tensors;
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  absl::StatusOr<formats::SafetensorsReader> file = formats::SafetensorsReader::Open(path);
  if (!file.ok()) return file.status();
  absl::StatusOr<kernels::WeightMap> tensors = ReadTensors(*file);
  if (!tensors.ok()) return tensors.status();
  return SafetensorsFile{file->metadata(), *std::move(tensors)};
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
    members.push_back(absl::StrCat(JsonQuote(name), ":{\"dtype\":\"",
                                   formats::DTypeName(ToFormats(tensor.dtype())), "\",\"shape\":[",
                                   absl::StrJoin(tensor.shape(), ","), "],\"data_offsets\":[",
                                   begin, ",", end, "]}"));
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
