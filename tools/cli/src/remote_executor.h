// The remote Executor: `atp run … --target HOST:PORT` computes on an atp worker through the client
// SDK (libatp_client) instead of in-process. The layer is registered under an id derived from its
// content digest ("cli-<16 hex>"), so repeated runs reuse what the worker already holds. The
// worker uses the default seed of randomized bases: results equal a local run on the same backend
// bit for bit; --seed is refused. Not thread-safe: one command, one executor.
#ifndef ATP_CLI_REMOTE_EXECUTOR_H_
#define ATP_CLI_REMOTE_EXECUTOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "atp/client/client.h"
#include "executor.h"

namespace atp::cli {

// Connection options shared by `atp run --target`, `atp info` and `atp health`.
struct RemoteOptions {
  std::string target;
  // PEM CA file: turns TLS on and verifies the worker with it.
  std::string tls_ca;
  // Name to verify the worker's certificate against instead of the target's host.
  std::string tls_server_name;
  // File holding the bearer token.
  std::string token_file;
  absl::Duration timeout = absl::Seconds(600);
};

// A client for `options` (INVALID_ARGUMENT for unreadable TLS or token files).
absl::StatusOr<std::unique_ptr<client::Client>> ConnectToWorker(const RemoteOptions& options);

// A status for people: "cannot reach worker H:P: …" for UNAVAILABLE, the message otherwise.
absl::Status DescribeRemoteError(const absl::Status& status, const std::string& target);

absl::StatusOr<std::unique_ptr<Executor>> CreateRemoteExecutor(const RemoteOptions& options,
                                                               std::function<void()> on_step);

}  // namespace atp::cli

#endif  // ATP_CLI_REMOTE_EXECUTOR_H_
