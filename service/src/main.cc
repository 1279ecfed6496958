// atp-worker: parses flags into WorkerOptions, starts a WorkerServer and drains it on SIGTERM or
// SIGINT. Everything else lives in the service library.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "atp/service/worker_flags.h"
#include "atp/service/worker_server.h"

namespace {

int g_signal_pipe[2] = {-1, -1};

// Async-signal-safe: only write(2). BUILD-NOTES gotcha 5: OpenBLAS starts threads before main(),
// so sigwait on a blocked mask can lose the signal; a self-pipe read by a thread does not.
void OnSignal(int signo) {
  const char byte = static_cast<char>(signo);
  const int saved = errno;
  (void)!::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

}  // namespace

int main(int argc, char** argv) {
  // BUILD-NOTES gotcha 3: Debian's abseil aborts on lock-order cycles it merely suspects.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  atp::service::TuneMallocForLargePayloads();

  auto flags = atp::service::ParseWorkerFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "atp-worker: %s\n", std::string(flags.status().message()).c_str());
    return 2;
  }
  if (flags->help) {
    std::fputs(atp::service::WorkerUsage("atp-worker").c_str(), stdout);
    return 0;
  }
  if (flags->version) {
    std::printf("atp-worker %s\n", atp::service::WorkerVersion());
    return 0;
  }

  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
    std::perror("atp-worker: pipe2");
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = atp::service::WorkerServer::Start(flags->options);
  if (!server.ok()) {
    std::fprintf(stderr, "atp-worker: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  atp::service::WorkerServer* worker = server->get();
  std::thread drainer([worker] {
    char byte = 0;
    for (;;) {
      const ssize_t n = ::read(g_signal_pipe[0], &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    worker->Shutdown();
  });
  worker->Wait();
  drainer.join();
  server->reset();
  return 0;
}
