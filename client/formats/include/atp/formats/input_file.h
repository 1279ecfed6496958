// An input file opened for positioned reads, with errors that name the file and what was being
// read. Used by the .safetensors reader here and by the atp CLI's .npy reader.
// Not thread-safe: one InputFile per thread.
#ifndef ATP_FORMATS_INPUT_FILE_H_
#define ATP_FORMATS_INPUT_FILE_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atp::formats {

class InputFile {
 public:
  // NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT (not a regular file), naming `path`.
  static absl::StatusOr<InputFile> Open(const std::string& path);

  InputFile(InputFile&&) noexcept = default;
  InputFile& operator=(InputFile&&) noexcept = default;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  // Reads exactly `n` bytes at `offset` into `dst`. INVALID_ARGUMENT naming `what` and the file
  // when the file ends first ("X.npy is truncated: want 48 bytes of data at byte 128, the file has
  // 150 bytes").
  absl::Status ReadAt(uint64_t offset, void* dst, size_t n, absl::string_view what);

 private:
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  InputFile(std::string path, std::unique_ptr<std::FILE, Closer> file, uint64_t size)
      : path_(std::move(path)), file_(std::move(file)), size_(size) {}

  std::string path_;
  std::unique_ptr<std::FILE, Closer> file_;
  uint64_t size_ = 0;
};

// A Status of the most specific code for the system error `err` (ENOENT → NOT_FOUND, EACCES/EPERM
// → PERMISSION_DENIED, otherwise INVALID_ARGUMENT): "cannot <action> <path>: <reason>".
absl::Status FileError(int err, absl::string_view action, absl::string_view path);

}  // namespace atp::formats

#endif  // ATP_FORMATS_INPUT_FILE_H_
