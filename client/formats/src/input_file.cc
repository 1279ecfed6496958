#include "atp/formats/input_file.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace atp::formats {

absl::Status FileError(int err, absl::string_view action, absl::string_view path) {
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

absl::StatusOr<InputFile> InputFile::Open(const std::string& path) {
  std::unique_ptr<std::FILE, Closer> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) return FileError(errno, "open", path);
  struct stat st;
  if (fstat(fileno(file.get()), &st) != 0) return FileError(errno, "stat", path);
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
    return FileError(errno, "seek in", path_);
  }
  if (std::fread(dst, 1, n, file_.get()) != n) {
    if (std::ferror(file_.get())) return FileError(errno, "read", path_);
    return absl::InvalidArgumentError(
        absl::StrCat(path_, " is truncated: it ended while reading ", what));
  }
  return absl::OkStatus();
}

}  // namespace atp::formats
