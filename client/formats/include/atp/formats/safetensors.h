// Reading .safetensors files: an 8-byte little-endian header length N, N bytes of JSON header,
// then the tensor data. The header maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the data section) and may hold "__metadata__", a
// string-to-string map.
//
// The reader knows F32, F16 and BF16 tensors and no tensor class: Open() reads and checks the
// whole header, then the caller reads each tensor's bytes straight into its own buffer. Reading is
// strict: a malformed header (see json.h), a header longer than kMaxSafetensorsHeaderBytes, another
// dtype, a byte count that does not match the shape, offsets outside the file or overlapping, or a
// truncated file each give INVALID_ARGUMENT with one line that names the file and what was
// expected; a missing file is NOT_FOUND.
//
// Thread-safety: a SafetensorsReader is not thread-safe (one per thread); the free functions are.
#ifndef ATP_FORMATS_SAFETENSORS_H_
#define ATP_FORMATS_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "atp/formats/input_file.h"

namespace atp::formats {

// The element types atp reads and writes, by their .safetensors names.
enum class DType { kF32, kF16, kBF16 };

// Bytes per element: 4 or 2.
size_t DTypeSize(DType dtype);
// "F32", "F16" or "BF16", as in a .safetensors header.
absl::string_view DTypeName(DType dtype);

using Shape = std::vector<int64_t>;
// "[64,32]".
std::string ShapeString(absl::Span<const int64_t> shape);

// `__metadata__`: string keys to string values.
using Metadata = std::map<std::string, std::string, std::less<>>;

// Largest JSON header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// One tensor of a file, as its header describes it (already checked against the file).
struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  // Any rank (a scalar has none); dimensions may be 0.
  Shape shape;
  // Byte range [begin, end) in the data section: exactly product(shape) · DTypeSize(dtype) bytes.
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t byte_size() const { return end - begin; }
};

class SafetensorsReader {
 public:
  // Opens `path` and reads and checks its header (nothing of the data is read yet).
  static absl::StatusOr<SafetensorsReader> Open(const std::string& path);

  SafetensorsReader(SafetensorsReader&&) noexcept = default;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept = default;

  const std::string& path() const { return file_.path(); }
  const Metadata& metadata() const { return metadata_; }
  // Every tensor, in the order of their data in the file.
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr.
  const TensorEntry* Find(absl::string_view name) const;

  // Reads the bytes of `entry` (one of tensors()) into `dst`, which holds entry.byte_size()
  // bytes. INVALID_ARGUMENT naming the file and the tensor when the file has shrunk since Open().
  absl::Status Read(const TensorEntry& entry, void* dst);

 private:
  SafetensorsReader(InputFile file, uint64_t data_start, Metadata metadata,
                    std::vector<TensorEntry> tensors)
      : file_(std::move(file)),
        data_start_(data_start),
        metadata_(std::move(metadata)),
        tensors_(std::move(tensors)) {}

  InputFile file_;
  uint64_t data_start_ = 0;
  Metadata metadata_;
  std::vector<TensorEntry> tensors_;
};

}  // namespace atp::formats

#endif  // ATP_FORMATS_SAFETENSORS_H_
