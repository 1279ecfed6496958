#include "file_util.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "atp/formats/input_file.h"

namespace atp::cli {

using formats::FileError;

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return FileError(errno, "write", path);
  for (absl::string_view piece : pieces) {
    if (!piece.empty() && std::fwrite(piece.data(), 1, piece.size(), f) != piece.size()) {
      const int err = errno;
      std::fclose(f);
      std::remove(tmp.c_str());
      return FileError(err, "write", path);
    }
  }
  if (std::fclose(f) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return FileError(err, "write", path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return FileError(err, "write", path);
  }
  return absl::OkStatus();
}

}  // namespace atp::cli
