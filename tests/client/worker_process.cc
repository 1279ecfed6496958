#include "worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace atp::testing {

std::string WorkerBinary() {
  const char* path = std::getenv("ATP_WORKER_BINARY");
  if (path != nullptr && *path != '\0') return path;
#ifdef ATP_WORKER_BINARY
  return ATP_WORKER_BINARY;
#else
  return "atp-worker";
#endif
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(
    const WorkerProcessOptions& options, absl::Duration timeout) {
  std::vector<std::string> args = {
      options.binary,
      absl::StrCat("--listen=127.0.0.1:", options.port),
      "--metrics-listen=",
      "--backend=cpu",
      absl::StrCat("--threads=", options.threads),
      absl::StrCat("--drain-timeout=", absl::ToDoubleSeconds(options.drain_timeout)),
  };
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  // fork + exec rather than posix_spawn, so that the child dies with the test (PR_SET_PDEATHSIG)
  // even when the test is killed. Only async-signal-safe calls between fork and exec.
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(fds[1], STDERR_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return absl::InternalError(
        absl::StrCat("cannot start ", options.binary, ": fork: ", std::strerror(errno)));
  }
  std::unique_ptr<WorkerProcess> w(new WorkerProcess());
  w->pid_ = pid;
  const int read_fd = fds[0];
  w->reader_ = std::thread([raw = w.get(), read_fd] { raw->ReadLoop(read_fd); });

  // Wait for the "worker started" line (or the end of the output).
  absl::MutexLock lock(&w->mu_);
  auto started = [raw = w.get()]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return raw->eof_ || raw->log_.find("msg=\"worker started\"") != std::string::npos;
  };
  w->mu_.AwaitWithTimeout(absl::Condition(&started), timeout);
  const size_t line = w->log_.find("msg=\"worker started\"");
  if (line == std::string::npos) {
    const std::string log = w->log_;
    w->mu_.Unlock();
    w->Kill();
    w->mu_.Lock();
    return absl::UnavailableError(absl::StrCat(
        "atp-worker did not start within ", absl::FormatDuration(timeout), "; its output:\n", log));
  }
  const size_t at = w->log_.find(" port=", line);
  int port = 0;
  if (at != std::string::npos) {
    const size_t end = w->log_.find(' ', at + 6);
    (void)absl::SimpleAtoi(w->log_.substr(at + 6, end - at - 6), &port);
  }
  if (port <= 0) {
    return absl::InternalError(absl::StrCat("no port in the worker's log:\n", w->log_));
  }
  w->port_ = port;
  return w;
}

void WorkerProcess::ReadLoop(int fd) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    absl::MutexLock lock(&mu_);
    log_.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  absl::MutexLock lock(&mu_);
  eof_ = true;
}

WorkerProcess::~WorkerProcess() {
  Kill();
  if (reader_.joinable()) reader_.join();
}

std::string WorkerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

void WorkerProcess::Kill() {
  if (running()) ::kill(pid_, SIGKILL);
  (void)WaitExit(absl::Seconds(30));
}

void WorkerProcess::Terminate() {
  if (running()) ::kill(pid_, SIGTERM);
}

bool WorkerProcess::running() const {
  absl::MutexLock lock(&mu_);
  return pid_ > 0 && !reaped_;
}

absl::StatusOr<int> WorkerProcess::WaitExit(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {  // bounded by `deadline`
    {
      absl::MutexLock lock(&mu_);
      if (pid_ <= 0) return absl::FailedPreconditionError("not started");
      if (reaped_) return exit_code_;
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_code_;
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("worker ", pid_, " still runs after ", absl::FormatDuration(timeout)));
    }
    // The child's exit closes its output pipe: wait for that rather than polling blindly.
    absl::MutexLock lock(&mu_);
    auto eof = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return eof_; };
    mu_.AwaitWithDeadline(absl::Condition(&eof),
                          std::min(deadline, absl::Now() + absl::Milliseconds(20)));
  }
}

std::string WorkerProcess::log() const {
  absl::MutexLock lock(&mu_);
  return log_;
}

std::string ScratchDir() {
  // Removed when the process exits.
  struct Dir {
    std::string path;
    Dir() {
      const char* tmp = std::getenv("TMPDIR");
      path = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/atp-client-test-",
                          ::getpid());
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static Dir dir;
  return dir.path;
}

absl::Status MakeTestCertificates(const std::string& dir) {
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script = absl::StrCat(
      "set -e; mkdir -p ", dir, "; cd ", dir, "\n", "openssl req -x509 ", ec,
      " -keyout ca.key -out ca.pem -days 2 -subj '/CN=atp client test CA'\n",
      "printf 'subjectAltName=DNS:localhost\\n' > san.ext\n", "openssl req ", ec,
      " -keyout server.key -out server.csr -subj '/CN=localhost'\n",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 ",
      "-extfile san.ext -out server.pem\n", "openssl req ", ec,
      " -keyout client.key -out client.csr -subj '/CN=atp client'\n",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 ",
      "-out client.pem\n");
  absl::StatusOr<CommandResult> r = RunCommand({"/bin/sh", "-c", script});
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat("making test certificates failed: ", r->err));
  }
  return absl::OkStatus();
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  std::vector<std::string> args = argv;
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    ::execv(cargs[0], cargs.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (pid < 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  CommandResult result;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  const absl::Time deadline = absl::Now() + timeout;
  bool timed_out = false;
  while (open_fds > 0) {  // bounded by `deadline`
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      timed_out = true;
      break;
    }
    const int n = ::poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(
        absl::StrCat(argv[0], " ran longer than ", absl::FormatDuration(timeout)));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace atp::testing
