// Whole-file helpers with errors that name the file: positioned reads from an input file and
// atomic writes (a temporary file renamed into place, so a failed write never leaves half a file).
// Not thread-safe: one InputFile per thread.
#ifndef ATP_CLI_FILE_UTIL_H_
#define ATP_CLI_FILE_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace atp::cli {

class InputFile {
 public:
  // NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT (not a regular file), naming `path`.
  static absl::StatusOr<InputFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  // Reads exactly `n` bytes at `offset` into `dst`. INVALID_ARGUMENT naming `what` and the file
  // when the file ends first ("X.npy is truncated: want 48 bytes of data at byte 128, the file has
  // 150").
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

// Writes the concatenation of `pieces` to `path` through a temporary file in the same directory
// that is renamed over `path` once complete. Errors name `path` and the system's reason.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces);

}  // namespace atp::cli

#endif  // ATP_CLI_FILE_UTIL_H_
