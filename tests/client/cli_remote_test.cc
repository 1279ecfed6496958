// The atp CLI talking to a real atp-worker (issue 3, item 7): `atp run … --target` writes the same
// files as the local run, bit for bit (same CPU backend); `atp info` and `atp health` exit codes;
// one clear line on stderr for an unreachable target; usage errors for remote options misused.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "atp/client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "worker_process.h"

namespace atp::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string CliBinary() { return ATP_CLI_BINARY; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The value of `key=` in an `atp run` result line.
std::string Field(const std::string& line, const std::string& key) {
  for (absl::string_view word : absl::StrSplit(line, absl::ByAnyChar(" \\n"))) {
    if (absl::ConsumePrefix(&word, absl::StrCat(key, "="))) return std::string(word);
  }
  return "";
}

class CliRemoteTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // All cores, as the local `atp run` uses them.
    auto w = WorkerProcess::Start({.binary = WorkerBinary(), .threads = 0});
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = w->release();
    dir_ = new std::string(ScratchDir() + "/cli_remote");
    ASSERT_EQ(Atp({"generate", "layer", "--d-model", "48", "--heads", "6", "--kv-heads", "2",
                   "--bias", "--seed", "3", "--output", Path("attn.safetensors")})
                  .exit_code,
              0);
    ASSERT_EQ(Atp({"generate", "linear", "--in-features", "48", "--out-features", "20", "--seed",
                   "4", "--output", Path("lin.safetensors")})
                  .exit_code,
              0);
    ASSERT_EQ(Atp({"generate", "input", "--length", "150", "--d-model", "48", "--seed", "5",
                   "--output", Path("x.npy")})
                  .exit_code,
              0);
  }
  static void TearDownTestSuite() {
    delete worker_;
    worker_ = nullptr;
  }

  static std::string Path(const std::string& name) {
    std::filesystem::create_directories(*dir_);
    return absl::StrCat(*dir_, "/", name);
  }

  static CommandResult Atp(std::vector<std::string> args) {
    args.insert(args.begin(), CliBinary());
    auto r = RunCommand(args);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  }

  // Runs `args` locally and on the worker (outputs named with a suffix) and returns both lines.
  static std::pair<std::string, std::string> RunBoth(std::vector<std::string> args,
                                                     const std::string& output_flag,
                                                     const std::string& output) {
    auto local = args;
    local.insert(local.end(), {output_flag, Path(output + ".local")});
    auto remote = args;
    remote.insert(remote.end(),
                  {output_flag, Path(output + ".remote"), "--target", worker_->address()});
    CommandResult l = Atp(local), r = Atp(remote);
    EXPECT_EQ(l.exit_code, 0) << l.err;
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return {l.out, r.out};
  }

  static WorkerProcess* worker_;
  static std::string* dir_;
};

WorkerProcess* CliRemoteTest::worker_ = nullptr;
std::string* CliRemoteTest::dir_ = nullptr;

TEST_F(CliRemoteTest, EveryRunOpOnTheWorkerEqualsTheLocalRunBitForBit) {
  struct Case {
    std::vector<std::string> args;
    std::string output_flag;
    std::vector<std::string> files;  // suffixes written under the output name
  };
  const std::vector<Case> cases = {
      {{"run", "atp-attention", "--layer", Path("attn.safetensors"), "--input", Path("x.npy")},
       "--output",
       {""}},
      {{"run", "atp-attention", "--layer", Path("attn.safetensors"), "--input", Path("x.npy"),
        "--rank", "5", "--output-dtype", "f16"},
       "--output",
       {""}},
      {{"run", "exact-attention", "--layer", Path("attn.safetensors"), "--input", Path("x.npy"),
        "--causal"},
       "--output",
       {""}},
      {{"run", "lowrank-linear", "--layer", Path("attn.safetensors"), "--weight", "k_proj",
        "--input", Path("x.npy"), "--rank-energy", "0.9"},
       "--output",
       {""}},
      {{"run", "lowrank-linear", "--layer", Path("lin.safetensors"), "--input", Path("x.npy"),
        "--rank-fraction", "0.05"},
       "--output",
       {""}},
      {{"run", "decompose", "--input", Path("x.npy"), "--rank", "6"},
       "--output-prefix",
       {".u.npy", ".s.npy", ".vt.npy"}},
      // Factored output, then a factored input (the factors decompose wrote just above).
      {{"run", "lowrank-linear", "--layer", Path("lin.safetensors"), "--input", Path("x.npy"),
        "--rank", "4"},
       "--output-prefix",
       {".u.npy", ".c.npy"}},
      {{"run", "lowrank-linear", "--layer", Path("lin.safetensors"), "--input-u",
        Path("out5.local.u.npy"), "--input-c", Path("out5.local.vt.npy")},
       "--output",
       {""}},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string name = absl::StrCat("out", n++);
    auto [local, remote] = RunBoth(c.args, c.output_flag, name);
    EXPECT_EQ(Field(local, "rank"), Field(remote, "rank")) << local << remote;
    EXPECT_EQ(Field(local, "energy"), Field(remote, "energy"));
    EXPECT_EQ(Field(local, "shape"), Field(remote, "shape"));
    for (const std::string& suffix : c.files) {
      const std::string a = ReadFile(Path(name + ".local" + suffix));
      const std::string b = ReadFile(Path(name + ".remote" + suffix));
      EXPECT_FALSE(a.empty()) << name << suffix;
      EXPECT_TRUE(a == b) << absl::StrJoin(c.args, " ") << ": " << suffix << " differs";
    }
  }
}

TEST_F(CliRemoteTest, InfoPrintsServerInfoAndLimits) {
  CommandResult r = Atp({"info", "--target", worker_->address()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("backend=cpu\n"));
  EXPECT_THAT(r.out, HasSubstr("readiness=SERVING\n"));
  EXPECT_THAT(r.out, HasSubstr("chunk_bytes=1048576\n"));
  EXPECT_THAT(r.out, HasSubstr("max_inflight_per_stream="));
  EXPECT_THAT(r.out, HasSubstr("operations=atp_attention,"));
}

TEST_F(CliRemoteTest, HealthExitsZeroOnlyWhenReady) {
  CommandResult ready = Atp({"health", "--target", worker_->address()});
  EXPECT_EQ(ready.exit_code, 0) << ready.err;
  EXPECT_EQ(ready.out, "SERVING\n");
  CommandResult live = Atp({"health", "--target", worker_->address(), "--service", ""});
  EXPECT_EQ(live.exit_code, 0) << live.err;
  CommandResult unknown = Atp({"health", "--target", worker_->address(), "--service", "nope"});
  EXPECT_EQ(unknown.exit_code, 1);

  // A draining worker is not ready: SIGTERM one while it computes a long request (cancelled when
  // its 1 s drain timeout runs out).
  auto draining =
      WorkerProcess::Start({.binary = WorkerBinary(), .drain_timeout = absl::Seconds(1)});
  ASSERT_TRUE(draining.ok());
  EXPECT_EQ(Atp({"health", "--target", (*draining)->address()}).exit_code, 0);
  auto c = client::Client::Create((*draining)->address());
  ASSERT_TRUE(c.ok());
  const AttentionShape shape{
      .d_model = 256, .heads = 32, .kv_heads = 32, .head_dim = 8, .bias = false};
  ASSERT_TRUE(
      (*c)->RegisterLayer(ClientAttention("slow", shape, RandomAttentionWeights(shape, 1))).ok());
  const std::vector<float> x = RandomValues(4096 * 256, 2);
  absl::Notification computed;
  (*c)->ExactAttentionAsync({.layer_id = "slow", .x = ClientView(x, {4096, 256})},
                            [&](absl::StatusOr<client::AttentionResult>) { computed.Notify(); });
  const absl::Time limit = absl::Now() + absl::Seconds(30);
  for (;;) {  // bounded by `limit`: wait until the worker has admitted the request
    auto stats = (*c)->GetStatistics();
    ASSERT_TRUE(stats.ok());
    if (stats->inflight_requests > 0) break;
    ASSERT_LT(absl::Now(), limit);
    absl::SleepFor(absl::Milliseconds(5));
  }
  (*draining)->Terminate();
  CommandResult not_ready;
  for (;;) {  // bounded by `limit`: SIGTERM is handled asynchronously
    not_ready = Atp({"health", "--target", (*draining)->address()});
    if (not_ready.out == "NOT_SERVING\n" || absl::Now() > limit) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(not_ready.out, "NOT_SERVING\n");
  EXPECT_EQ(not_ready.exit_code, 1);
  EXPECT_EQ(std::count(not_ready.err.begin(), not_ready.err.end(), '\n'), 1) << not_ready.err;
  ASSERT_TRUE(computed.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE((*draining)->WaitExit(absl::Seconds(30)).ok());
  CommandResult stopped = Atp({"health", "--target", (*draining)->address()});
  EXPECT_EQ(stopped.exit_code, 1);
  EXPECT_THAT(stopped.err, StartsWith("atp: error: cannot reach worker "));

  // --wait: a worker that comes up within the wait is reported ready.
  CommandResult waited = Atp({"health", "--target", worker_->address(), "--wait", "10"});
  EXPECT_EQ(waited.exit_code, 0) << waited.err;
}

TEST_F(CliRemoteTest, UnreachableTargetIsOneClearLine) {
  auto gone = WorkerProcess::Start({.binary = WorkerBinary()});
  ASSERT_TRUE(gone.ok());
  const std::string address = (*gone)->address();
  (*gone)->Kill();
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"run", "decompose", "--input", Path("x.npy"), "--output-prefix", Path("never"),
            "--target", address},
           {"run", "atp-attention", "--layer", Path("attn.safetensors"), "--input", Path("x.npy"),
            "--output", Path("never.npy"), "--target", address},
           {"info", "--target", address},
           {"health", "--target", address}}) {
    CommandResult r = Atp(args);
    EXPECT_EQ(r.exit_code, 1) << absl::StrJoin(args, " ");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith(absl::StrCat("atp: error: cannot reach worker ", address, ": ")));
  }
  EXPECT_FALSE(std::filesystem::exists(Path("never.npy")));
}

TEST_F(CliRemoteTest, RemoteOptionsMisusedAreUsageErrors) {
  CommandResult no_target = Atp({"info"});
  EXPECT_EQ(no_target.exit_code, 2);
  EXPECT_THAT(no_target.err, HasSubstr("--target"));
  CommandResult ca_alone = Atp({"run", "decompose", "--input", Path("x.npy"), "--output-prefix",
                                Path("p"), "--tls-ca", "/no/such/ca.pem"});
  EXPECT_EQ(ca_alone.exit_code, 2);
  CommandResult both = Atp({"run", "decompose", "--input", Path("x.npy"), "--output-prefix",
                            Path("p"), "--backend", "cpu", "--target", worker_->address()});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_THAT(both.err, HasSubstr("--backend"));
  CommandResult seed = Atp({"run", "decompose", "--input", Path("x.npy"), "--output-prefix",
                            Path("p"), "--seed", "7", "--target", worker_->address()});
  EXPECT_EQ(seed.exit_code, 1);
  EXPECT_THAT(seed.err, HasSubstr("--seed"));
  CommandResult bad_ca = Atp({"info", "--target", worker_->address(), "--tls-ca", "/no/such"});
  EXPECT_EQ(bad_ca.exit_code, 1);
  EXPECT_THAT(bad_ca.err, HasSubstr("/no/such"));
}

TEST_F(CliRemoteTest, TlsWorkerIsVerifiedByTheGivenName) {
  const std::string certs = Path("certs");
  ASSERT_TRUE(MakeTestCertificates(certs).ok());
  auto w = WorkerProcess::Start({.binary = WorkerBinary(),
                                 .extra_args = {absl::StrCat("--tls-cert=", certs, "/server.pem"),
                                                absl::StrCat("--tls-key=", certs, "/server.key")}});
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string ca = absl::StrCat(certs, "/ca.pem");
  // The certificate names "localhost", not 127.0.0.1.
  CommandResult by_ip = Atp({"health", "--target", (*w)->address(), "--tls-ca", ca});
  EXPECT_EQ(by_ip.exit_code, 1);
  CommandResult named = Atp(
      {"health", "--target", (*w)->address(), "--tls-ca", ca, "--tls-server-name", "localhost"});
  EXPECT_EQ(named.exit_code, 0) << named.err;
  CommandResult run =
      Atp({"run", "decompose", "--input", Path("x.npy"), "--output-prefix", Path("tls"), "--rank",
           "2", "--target", absl::StrCat("localhost:", (*w)->port()), "--tls-ca", ca});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  CommandResult plaintext = Atp({"info", "--target", (*w)->address()});
  EXPECT_EQ(plaintext.exit_code, 1);
  CommandResult name_alone =
      Atp({"info", "--target", (*w)->address(), "--tls-server-name", "localhost"});
  EXPECT_EQ(name_alone.exit_code, 2);
}

TEST_F(CliRemoteTest, TokenFileIsSentToAWorkerThatRequiresOne) {
  const std::string token = Path("token");
  std::ofstream(token) << "tok-123\n";
  auto w = WorkerProcess::Start(
      {.binary = WorkerBinary(), .extra_args = {absl::StrCat("--token-file=", token)}});
  ASSERT_TRUE(w.ok()) << w.status();
  CommandResult anonymous = Atp({"info", "--target", (*w)->address()});
  EXPECT_EQ(anonymous.exit_code, 1);
  EXPECT_THAT(anonymous.err, HasSubstr("token"));
  CommandResult with = Atp({"info", "--target", (*w)->address(), "--token-file", token});
  EXPECT_EQ(with.exit_code, 0) << with.err;
  EXPECT_THAT(with.out, HasSubstr("requires_token=true"));
  CommandResult run =
      Atp({"run", "decompose", "--input", Path("x.npy"), "--output-prefix", Path("tok"), "--rank",
           "2", "--target", (*w)->address(), "--token-file", token});
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

}  // namespace
}  // namespace atp::testing
