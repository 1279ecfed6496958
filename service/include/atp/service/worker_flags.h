// The atp-worker command line: flags with dashes (--max-tensor-bytes), each documented in
// WorkerUsage(), parsed into WorkerOptions. A config file is a --flagfile: one flag per line,
// "#" starts a comment. Byte sizes take 1048576, 1MiB, 4GiB, 1GB (decimal); durations take 30s,
// 500ms, 2m or plain seconds. Thread-safe: pure functions.
#ifndef ATP_SERVICE_WORKER_FLAGS_H_
#define ATP_SERVICE_WORKER_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "atp/service/worker_options.h"

namespace atp::service {

struct WorkerFlags {
  WorkerOptions options;
  bool help = false;     // --help: print WorkerUsage() and exit 0
  bool version = false;  // --version
};

// Parses argv[1..argc-1] ("--name=value" or "--name value"). INVALID_ARGUMENT with one line that
// names the flag and what was expected: unknown flags, bad values, positional arguments, an
// unreadable --flagfile.
absl::StatusOr<WorkerFlags> ParseWorkerFlags(int argc, const char* const* argv);

// The --help text: usage, then every flag with its value, meaning and default.
std::string WorkerUsage(absl::string_view program);

// "1048576", "1MiB", "4GiB", "1GB", "512KiB" → bytes. INVALID_ARGUMENT otherwise.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

}  // namespace atp::service

#endif  // ATP_SERVICE_WORKER_FLAGS_H_
