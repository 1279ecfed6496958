// `atp info` and `atp health`: what an atp worker says about itself, and the remote options that
// `atp run` shares with them (--target, --tls-ca, --token-file, --timeout).
//
//   atp info --target HOST:PORT      version, backend, device, readiness and every limit
//   atp health --target HOST:PORT    prints the readiness; exits 0 only when SERVING (the container
//                                    image's health check and the Helm test pod use it)
// Not thread-safe (one invocation at a time).
#ifndef ATP_CLI_WORKER_COMMANDS_H_
#define ATP_CLI_WORKER_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "args.h"
#include "remote_executor.h"

namespace atp::cli {

// Declares --target, --tls-ca, --token-file and --timeout. `for_run`: the help says that
// --target makes the op run on a worker instead of in-process.
void AddRemoteOptions(ArgParser& p, bool for_run);
// The options given; an empty target when --target is absent. Usage errors for bad values.
absl::StatusOr<RemoteOptions> ParseRemoteOptions(const ArgParser& p);

bool IsWorkerCommand(absl::string_view name);
// Runs `atp info` or `atp health` with `args` (the words after the command). Returns the exit
// code; errors are one line on `err`.
int RunWorkerCommand(absl::string_view name, absl::Span<const std::string> args, std::ostream& out,
                     std::ostream& err);

}  // namespace atp::cli

#endif  // ATP_CLI_WORKER_COMMANDS_H_
