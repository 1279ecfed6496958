#include "file_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace atp::cli {
namespace {

absl::Status ErrnoError(int err, absl::string_view action, absl::string_view path) {
  const std::string message = absl::StrCat("cannot ", action, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::InvalidArgumentError(message);
  }
}

}  // namespace

absl::StatusOr<InputFile> InputFile::Open(const std::string& path) {
  std::unique_ptr<std::FILE, Closer> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) return ErrnoError(errno, "open", path);
  struct stat st;
  if (fstat(fileno(file.get()), &st) != 0) return ErrnoError(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": not a regular file"));
  }
  return InputFile(path, std::move(file), static_cast<uint64_t>(st.st_size));
}

absl::Status InputFile::ReadAt(uint64_t offset, void* dst, size_t n, absl::string_view what) {
  if (offset > size_ || n > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrCat(path_, " is truncated: want ", n, " bytes of ",
                                                   what, " at byte ", offset, ", the file has ",
                                                   size_, " bytes"));
  }
  if (n == 0) return absl::OkStatus();
  if (fseeko(file_.get(), static_cast<off_t>(offset), SEEK_SET) != 0) {
    return ErrnoError(errno, "seek in", path_);
  }
  if (std::fread(dst, 1, n, file_.get()) != n) {
    if (std::ferror(file_.get())) return ErrnoError(errno, "read", path_);
    return absl::InvalidArgumentError(
        absl::StrCat(path_, " is truncated: it ended while reading ", what));
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return ErrnoError(errno, "write", path);
  for (absl::string_view piece : pieces) {
    if (!piece.empty() && std::fwrite(piece.data(), 1, piece.size(), f) != piece.size()) {
      const int err = errno;
      std::fclose(f);
      std::remove(tmp.c_str());
      return ErrnoError(err, "write", path);
    }
  }
  if (std::fclose(f) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return ErrnoError(err, "write", path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return ErrnoError(err, "write", path);
  }
  return absl::OkStatus();
}

}  // namespace atp::cli
