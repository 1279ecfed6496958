// The `atp` command line: `atp run <op>` and `atp generate <what>` (see `atp --help`).
//
// Exit codes: 0 success, 1 runtime error (a bad file, a failed computation), 2 usage error (a bad
// command line). Every error is one line on `err`. Not thread-safe (one invocation at a time).
#ifndef ATP_CLI_CLI_H_
#define ATP_CLI_CLI_H_

#include <ostream>
#include <string>

#include "absl/types/span.h"

namespace atp::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntimeError = 1;
inline constexpr int kExitUsageError = 2;

// Runs the command in `args` (the words after the program name). `interactive`: `err` is a
// terminal, where long computations show their elapsed time.
int RunCli(absl::Span<const std::string> args, std::ostream& out, std::ostream& err,
           bool interactive = false);

}  // namespace atp::cli

#endif  // ATP_CLI_CLI_H_
