// Test helper: an atp-worker binary running as a child process on 127.0.0.1, so that tests can
// kill it (SIGKILL), drain it (SIGTERM) and restart it on the same port. Its port is the one the
// worker picked (--listen 127.0.0.1:0) and named in its "worker started" log line; its stderr is
// kept for failure messages. Every wait is bounded. Thread-safe.
#ifndef ATP_TESTS_CLIENT_WORKER_PROCESS_H_
#define ATP_TESTS_CLIENT_WORKER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace atp::testing {

struct WorkerProcessOptions {
  // Path of atp-worker.
  std::string binary;
  // 0: a free port picked by the worker.
  int port = 0;
  // CPU backend threads (tests share 2 cores among several workers).
  int threads = 1;
  absl::Duration drain_timeout = absl::Seconds(10);
  // More flags ("--max-inflight-requests=4", ...).
  std::vector<std::string> extra_args;
};

class WorkerProcess {
 public:
  // Starts the worker and waits (up to `timeout`) for its "worker started" line.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(
      const WorkerProcessOptions& options, absl::Duration timeout = absl::Seconds(30));
  // SIGKILLs the process if it still runs.
  ~WorkerProcess();

  int port() const { return port_; }
  // "127.0.0.1:PORT".
  std::string address() const;
  pid_t pid() const { return pid_; }

  // SIGKILL and reap.
  void Kill();
  // SIGTERM (the worker drains, then exits 0).
  void Terminate();
  // Waits for the process to exit; its exit code (128 + signal when killed), or DEADLINE_EXCEEDED.
  absl::StatusOr<int> WaitExit(absl::Duration timeout);
  bool running() const;

  // Everything the worker wrote to stderr so far.
  std::string log() const;

 private:
  WorkerProcess() = default;
  void ReadLoop(int fd);

  pid_t pid_ = -1;
  int port_ = 0;
  std::thread reader_;
  mutable absl::Mutex mu_;
  std::string log_ ABSL_GUARDED_BY(mu_);
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
  bool reaped_ ABSL_GUARDED_BY(mu_) = false;
  int exit_code_ ABSL_GUARDED_BY(mu_) = -1;
};

// The atp-worker binary: $ATP_WORKER_BINARY, else the one this build made.
std::string WorkerBinary();

// A directory of this test process's own under the test temporary directory (CTest runs test
// processes in parallel: they must not share file names). Created on first use.
std::string ScratchDir();

// Writes, with the openssl tool, into `dir`: ca.pem/ca.key (a CA), server.pem/server.key (a
// certificate for the name "localhost" only, no IP address) and client.pem/client.key.
absl::Status MakeTestCertificates(const std::string& dir);

// What a finished command printed and returned.
struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;
  std::string err;
};

// Runs `argv` (argv[0] is the program's path) to completion, up to `timeout` (then it is killed
// and DEADLINE_EXCEEDED returned).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout = absl::Seconds(120));

}  // namespace atp::testing

#endif  // ATP_TESTS_CLIENT_WORKER_PROCESS_H_
