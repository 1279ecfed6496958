// The atp-worker binary as a subprocess: --help and bad flags, and SIGTERM draining — readiness
// turns NOT_SERVING, admitted work completes, new work is refused, the process exits 0; work that
// outlives --drain-timeout is cancelled and the process still exits 0.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "worker_harness.h"

#ifndef ATP_WORKER_BINARY
#error "ATP_WORKER_BINARY must name the atp-worker binary"
#endif

namespace atp::service::testing {
namespace {

using ::testing::HasSubstr;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

// A child process with its stderr captured.
class Process {
 public:
  explicit Process(const std::vector<std::string>& args) {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDERR_FILENO);
      ::dup2(fds[1], STDOUT_FILENO);
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
  }

  ~Process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }

  // Reads output until `pattern` matches a line or `timeout` passes; returns the first group.
  std::string WaitForLine(const std::string& pattern, absl::Duration timeout) {
    const std::regex re(pattern);
    const absl::Time end = absl::Now() + timeout;
    for (;;) {
      size_t nl;
      while ((nl = buffer_.find('\n')) != std::string::npos) {
        const std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        output_ += line + "\n";
        std::smatch m;
        if (std::regex_search(line, m, re)) return m.size() > 1 ? m[1].str() : line;
      }
      const int left = static_cast<int>(absl::ToInt64Milliseconds(end - absl::Now()));
      if (left <= 0) return "";
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, left) <= 0) return "";
      char buf[4096];
      const ssize_t n = ::read(out_, buf, sizeof(buf));
      if (n <= 0) return "";
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }

  // Waits (bounded) for the exit; returns the exit code, or -1 on a timeout or a signal death.
  int WaitForExit(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        // The write end is closed now: collect the rest of the output.
        WaitForLine("$^unmatchable", absl::Seconds(5));
        output_ += buffer_;
        buffer_.clear();
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return -1;
  }

  void Signal(int signo) { ::kill(pid_, signo); }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  std::string buffer_;
  std::string output_;
};

std::vector<std::string> WorkerArgs(std::vector<std::string> extra) {
  std::vector<std::string> args = {ATP_WORKER_BINARY, "--listen=127.0.0.1:0", "--metrics-listen=",
                                   "--backend=cpu",   "--threads=1",          "--log-format=json"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(WorkerBinaryTest, HelpExitsZeroAndBadFlagsExitTwoWithOneLine) {
  {
    Process p({ATP_WORKER_BINARY, "--help"});
    EXPECT_FALSE(p.WaitForLine("--max-inflight-per-stream=N", absl::Seconds(20)).empty());
    EXPECT_EQ(p.WaitForExit(absl::Seconds(20)), 0);
  }
  {
    Process p({ATP_WORKER_BINARY, "--max-rank=-3"});
    EXPECT_EQ(p.WaitForLine("^(atp-worker: .*)$", absl::Seconds(20)),
              "atp-worker: --max-rank=-3 is not valid, want an integer from 1 to 2147483647");
    EXPECT_EQ(p.WaitForExit(absl::Seconds(20)), 2);
  }
}

class DrainTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& extra) {
    process_ = std::make_unique<Process>(WorkerArgs(extra));
    const std::string port =
        process_->WaitForLine("\"msg\":\"worker started\".*\"port\":([0-9]+)", absl::Seconds(30));
    ASSERT_FALSE(port.empty()) << process_->output();
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    stub_ = atp::v1::Worker::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }

  std::unique_ptr<Process> process_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<atp::v1::Worker::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

TEST_F(DrainTest, SigtermFinishesAdmittedWorkRefusesNewWorkAndExitsZero) {
  ASSERT_NO_FATAL_FAILURE(Start({"--drain-timeout=30s"}));
  ASSERT_TRUE(RegisterLayer(*stub_, "attn", RandomAttentionLayer(32, 4, 2, 8, true, 1)).ok());
  const kernels::Tensor x = RandomTensor(kernels::DType::kF32, {300, 32}, 2);
  const std::string bytes(static_cast<const char*>(x.data()), x.byte_size());

  grpc::ClientContext watch_context;
  Prepare(&watch_context);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("atp.v1.Worker");
  auto watch = health_->Watch(&watch_context, req);
  HealthStatus update;
  ASSERT_TRUE(watch->Read(&update));
  ASSERT_EQ(update.status(), HealthStatus::SERVING);

  // A request in flight: admitted, all but its last 100 bytes received.
  ComputeSession session(*stub_);
  ASSERT_TRUE(session.SendHeader(ExactAttentionRequest(1, "attn", x, false)));
  ASSERT_TRUE(session.SendChunk(1, 0, 0, absl::string_view(bytes).substr(0, bytes.size() - 100)));
  auto stats = WaitForStatistics(
      *stub_, [](const atp::v1::Statistics& s) { return s.inflight_requests() == 1; });
  ASSERT_EQ(stats.inflight_requests(), 1u);  // admitted before the signal

  process_->Signal(SIGTERM);
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthStatus::NOT_SERVING);
  EXPECT_FALSE(process_->WaitForLine("\"msg\":\"draining\"", absl::Seconds(10)).empty());

  // New work is refused: in-band on the open stream, at the stream level on a new one.
  ASSERT_TRUE(session.SendHeader(DecomposeRequest(2, x, 2)));
  {
    ComputeSession late(*stub_);
    late.SendRequest(DecomposeRequest(1, x, 2), {&x});
    EXPECT_FALSE(late.Read().ok());
    EXPECT_EQ(late.Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  // The admitted request completes.
  ASSERT_TRUE(session.SendChunk(1, 0, bytes.size() - 100,
                                absl::string_view(bytes).substr(bytes.size() - 100)));
  auto first = session.Read();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->status.ok()) << first->status;
  ASSERT_EQ(first->outputs.size(), 1u);
  EXPECT_EQ(first->outputs[0].shape(), (kernels::Shape{300, 32}));
  auto second = session.Read();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second->status.message(), HasSubstr("draining"));
  EXPECT_EQ(session.Finish().error_code(), grpc::StatusCode::UNAVAILABLE);

  EXPECT_EQ(process_->WaitForExit(absl::Seconds(30)), 0) << process_->output();
  EXPECT_THAT(process_->output(), HasSubstr("\"drained\":true"));
}

TEST_F(DrainTest, WorkPastTheDrainTimeoutIsCancelledAndTheExitIsStillZero) {
  ASSERT_NO_FATAL_FAILURE(Start({"--drain-timeout=300ms"}));
  const kernels::Tensor x = RandomTensor(kernels::DType::kF32, {64, 8}, 3);
  ComputeSession session(*stub_);
  ASSERT_TRUE(session.SendHeader(DecomposeRequest(1, x, 2)));  // its payload never comes
  auto stats = WaitForStatistics(
      *stub_, [](const atp::v1::Statistics& s) { return s.inflight_requests() == 1; });
  ASSERT_EQ(stats.inflight_requests(), 1u);
  process_->Signal(SIGTERM);
  EXPECT_EQ(process_->WaitForExit(absl::Seconds(30)), 0) << process_->output();
  EXPECT_THAT(process_->output(), HasSubstr("drain timeout"));
  EXPECT_FALSE(session.Read().ok());
  const grpc::StatusCode end = session.Finish().error_code();
  EXPECT_TRUE(end == grpc::StatusCode::CANCELLED || end == grpc::StatusCode::UNAVAILABLE) << end;
}

}  // namespace
}  // namespace atp::service::testing
