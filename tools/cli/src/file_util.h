// Atomic writes: a temporary file renamed into place, so a failed write never leaves half a file.
// (Reading goes through atp/formats/input_file.h, shared with the client SDK.) Thread-safe for
// distinct paths.
#ifndef ATP_CLI_FILE_UTIL_H_
#define ATP_CLI_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace atp::cli {

// Writes the concatenation of `pieces` to `path` through a temporary file in the same directory
// that is renamed over `path` once complete. Errors name `path` and the system's reason.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces);

}  // namespace atp::cli

#endif  // ATP_CLI_FILE_UTIL_H_
