// Client against a real atp-worker process on 127.0.0.1 (CPU backend, one thread): every op equals
// the in-process CPU backend bit for bit, batches pipeline on one stream, async calls from many
// threads, errors are specific and leave the worker serving, deadlines cancel the worker's work,
// an unreachable worker fails fast, a restarted worker gets its layer back.
#include "atp/client/client.h"

#include <atomic>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "atp/client/pool.h"
#include "atp/kernels/backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "worker_process.h"

namespace atp::testing {
namespace {

using client::Client;
using ::testing::HasSubstr;

constexpr absl::Duration kReadyTimeout = absl::Seconds(30);

class ClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto w = WorkerProcess::Start({.binary = WorkerBinary()});
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = w->release();
  }
  static void TearDownTestSuite() {
    delete worker_;
    worker_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(worker_, nullptr);
    auto c = Client::Create(worker_->address());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
    ASSERT_TRUE(client_->WaitUntilReady(absl::Now() + kReadyTimeout).ok()) << worker_->log();
  }

  static WorkerProcess* worker_;
  std::unique_ptr<Client> client_;
};

WorkerProcess* ClientTest::worker_ = nullptr;

TEST_F(ClientTest, AtpAttentionEqualsInProcessBackendBitForBit) {
  const AttentionShape shape{.d_model = 48, .heads = 6, .kv_heads = 3, .head_dim = 8};
  const Weights w = RandomAttentionWeights(shape, 11);
  ASSERT_TRUE(client_->RegisterLayer(ClientAttention("attn", shape, w)).ok());
  auto local = LocalBackend().LoadLayer(KernelAttention(shape, w));
  ASSERT_TRUE(local.ok()) << local.status();
  for (int64_t length : {1, 7, 33, 100}) {
    const std::vector<float> x = LowRankSequence(length, shape.d_model, 5, 100 + length);
    for (auto rank : {client::RankPolicy::Fixed(3), client::RankPolicy::Energy(0.95)}) {
      auto remote = client_->AtpAttention(
          {.layer_id = "attn", .x = ClientView(x, {length, shape.d_model}), .rank = rank});
      ASSERT_TRUE(remote.ok()) << remote.status();
      kernels::AtpAttentionArgs args;
      args.x = KernelView(x, {length, shape.d_model});
      args.rank = rank.kind == client::RankPolicy::Kind::kFixed ? kernels::RankPolicy::Fixed(3)
                                                                : kernels::RankPolicy::Energy(0.95);
      auto want = LocalBackend().AtpAttention(**local, args, {});
      ASSERT_TRUE(want.ok()) << want.status();
      EXPECT_EQ(remote->rank, want->rank) << "L=" << length;
      EXPECT_EQ(remote->captured_energy, want->captured_energy);
      EXPECT_EQ(remote->y.shape(), (client::Shape{length, shape.d_model}));
      EXPECT_EQ(Floats(remote->y), Floats(want->y)) << "L=" << length;
      EXPECT_EQ(remote->info.worker, worker_->address());
      EXPECT_EQ(remote->info.bytes_sent, x.size() * sizeof(float));
      EXPECT_EQ(remote->info.bytes_received, remote->y.byte_size());
      EXPECT_EQ(remote->info.attempts, 1);
    }
  }
}

TEST_F(ClientTest, ExactAttentionEqualsInProcessBackend) {
  const AttentionShape shape{
      .d_model = 32, .heads = 4, .kv_heads = 4, .head_dim = 8, .bias = false};
  const Weights w = RandomAttentionWeights(shape, 21);
  ASSERT_TRUE(client_->RegisterLayer(ClientAttention("exact", shape, w)).ok());
  auto local = LocalBackend().LoadLayer(KernelAttention(shape, w));
  ASSERT_TRUE(local.ok());
  const std::vector<float> x = RandomValues(19 * 32, 22);
  for (bool causal : {false, true}) {
    auto remote = client_->ExactAttention(
        {.layer_id = "exact", .x = ClientView(x, {19, 32}), .causal = causal});
    ASSERT_TRUE(remote.ok()) << remote.status();
    kernels::ExactAttentionArgs args;
    args.x = KernelView(x, {19, 32});
    args.causal = causal;
    auto want = LocalBackend().ExactAttention(**local, args, {});
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(Floats(remote->y), Floats(*want)) << "causal=" << causal;
    EXPECT_EQ(remote->rank, 0);
  }
}

TEST_F(ClientTest, LowRankLinearDenseFactoredAndChainedEqualInProcessBackend) {
  const Weights w1 = RandomLinearWeights(40, 24, /*bias=*/true, 31);
  const Weights w2 = RandomLinearWeights(16, 40, /*bias=*/false, 32);
  ASSERT_TRUE(client_->RegisterLayer(ClientLinear("lin1", w1)).ok());
  ASSERT_TRUE(client_->RegisterLayer(ClientLinear("lin2", w2)).ok());
  auto l1 = LocalBackend().LoadLayer(KernelLinear(w1));
  auto l2 = LocalBackend().LoadLayer(KernelLinear(w2));
  ASSERT_TRUE(l1.ok() && l2.ok());
  const std::vector<float> x = LowRankSequence(50, 24, 4, 33);

  // Dense in, factored out; then that factored output straight into the next layer.
  auto f = client_->LowRankLinear({.layer_id = "lin1",
                                   .input = ClientView(x, {50, 24}),
                                   .rank = client::RankPolicy::Fixed(4),
                                   .factored_output = true});
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE(f->factored);
  EXPECT_EQ(f->y_factored.u.shape(), (client::Shape{50, 5}));  // [U, 1] with the bias
  EXPECT_EQ(f->y_factored.c.shape(), (client::Shape{5, 40}));
  kernels::LowRankLinearArgs a1;
  a1.x = KernelView(x, {50, 24});
  a1.rank = kernels::RankPolicy::Fixed(4);
  a1.factored_output = true;
  auto want1 = LocalBackend().LowRankLinear(**l1, a1, {});
  ASSERT_TRUE(want1.ok()) << want1.status();
  EXPECT_EQ(Floats(f->y_factored.u), Floats(want1->u));
  EXPECT_EQ(Floats(f->y_factored.c), Floats(want1->c));

  auto y = client_->LowRankLinear({.layer_id = "lin2", .input = f->y_factored.view()});
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_FALSE(y->factored);
  kernels::LowRankLinearArgs a2;
  a2.factored_input = true;
  a2.u = want1->u.view();
  a2.c = want1->c.view();
  auto want2 = LocalBackend().LowRankLinear(**l2, a2, {});
  ASSERT_TRUE(want2.ok()) << want2.status();
  EXPECT_EQ(Floats(y->y), Floats(want2->y));
  EXPECT_EQ(y->y.shape(), (client::Shape{50, 16}));
}

TEST_F(ClientTest, DecomposeEqualsInProcessBackend) {
  const std::vector<float> x = LowRankSequence(37, 20, 6, 41);
  auto remote =
      client_->Decompose({.x = ClientView(x, {37, 20}), .rank = client::RankPolicy::Energy(0.999)});
  ASSERT_TRUE(remote.ok()) << remote.status();
  kernels::PrincipalBasesArgs args;
  args.x = KernelView(x, {37, 20});
  args.rank = kernels::RankPolicy::Energy(0.999);
  auto want = LocalBackend().Decompose(args, {});
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(remote->rank, want->rank);
  EXPECT_EQ(Floats(remote->u), Floats(want->u));
  EXPECT_EQ(Floats(remote->s), Floats(want->s));
  EXPECT_EQ(Floats(remote->vt), Floats(want->vt));
}

TEST_F(ClientTest, BatchPipelinesRequestsOnOneStreamInOrder) {
  const AttentionShape shape;
  const Weights w = RandomAttentionWeights(shape, 51);
  ASSERT_TRUE(client_->RegisterLayer(ClientAttention("batch", shape, w)).ok());
  auto local = LocalBackend().LoadLayer(KernelAttention(shape, w));
  ASSERT_TRUE(local.ok());
  constexpr int kRequests = 23;
  std::vector<std::vector<float>> xs;
  std::vector<client::AtpAttentionRequest> requests;
  for (int i = 0; i < kRequests; ++i) xs.push_back(LowRankSequence(10 + i, 32, 3, 500 + i));
  for (int i = 0; i < kRequests; ++i) {
    requests.push_back({.layer_id = "batch",
                        .x = ClientView(xs[i], {10 + i, 32}),
                        .rank = client::RankPolicy::Fixed(2)});
  }
  // One request in the middle is bad: it fails alone.
  requests[7].layer_id = "no-such-layer";
  auto results = client_->AtpAttentionBatch(requests);
  ASSERT_EQ(results.size(), kRequests);
  for (int i = 0; i < kRequests; ++i) {
    if (i == 7) {
      EXPECT_EQ(results[i].status().code(), absl::StatusCode::kNotFound);
      EXPECT_THAT(results[i].status().message(), HasSubstr("no-such-layer"));
      continue;
    }
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status();
    kernels::AtpAttentionArgs args;
    args.x = KernelView(xs[i], {10 + i, 32});
    args.rank = kernels::RankPolicy::Fixed(2);
    auto want = LocalBackend().AtpAttention(**local, args, {});
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(Floats(results[i]->y), Floats(want->y)) << i;
  }
}

TEST_F(ClientTest, AsyncCallsFromManyThreadsAllComplete) {
  const AttentionShape shape;
  const Weights w = RandomAttentionWeights(shape, 61);
  ASSERT_TRUE(client_->RegisterLayer(ClientAttention("async", shape, w)).ok());
  auto local = LocalBackend().LoadLayer(KernelAttention(shape, w));
  ASSERT_TRUE(local.ok());
  constexpr int kThreads = 6, kPerThread = 10;
  std::vector<std::vector<float>> xs;
  for (int i = 0; i < kThreads * kPerThread; ++i) xs.push_back(LowRankSequence(16, 32, 3, 700 + i));
  absl::Mutex mu;
  int done = 0;
  std::vector<std::vector<float>> got(xs.size());
  std::vector<absl::Status> status(xs.size());
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kPerThread; ++k) {
        const int i = t * kPerThread + k;
        client_->AtpAttentionAsync({.layer_id = "async",
                                    .x = ClientView(xs[i], {16, 32}),
                                    .rank = client::RankPolicy::Fixed(3)},
                                   [&, i](absl::StatusOr<client::AttentionResult> r) {
                                     absl::MutexLock lock(&mu);
                                     status[i] = r.status();
                                     if (r.ok()) got[i] = Floats(r->y);
                                     ++done;
                                   });
      }
    });
  }
  for (auto& t : threads) t.join();
  {
    absl::MutexLock lock(&mu);
    auto all = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return done == kThreads * kPerThread; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(60)));
  }
  for (size_t i = 0; i < xs.size(); ++i) {
    ASSERT_TRUE(status[i].ok()) << status[i];
    kernels::AtpAttentionArgs args;
    args.x = KernelView(xs[i], {16, 32});
    args.rank = kernels::RankPolicy::Fixed(3);
    auto want = LocalBackend().AtpAttention(**local, args, {});
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(got[i], Floats(want->y)) << i;
  }
}

TEST_F(ClientTest, BadInputGetsSpecificErrorAndWorkerKeepsServing) {
  const AttentionShape shape;
  const Weights w = RandomAttentionWeights(shape, 71);
  ASSERT_TRUE(client_->RegisterLayer(ClientAttention("bad", shape, w)).ok());
  const std::vector<float> x = RandomValues(10 * 31, 72);
  auto wrong_width = client_->AtpAttention({.layer_id = "bad", .x = ClientView(x, {10, 31})});
  EXPECT_EQ(wrong_width.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_width.status().message(), HasSubstr("31"));
  auto unknown = client_->AtpAttention({.layer_id = "missing", .x = ClientView(x, {10, 31})});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("missing"));
  // Refused before sending: a 1-D input and a bad rank policy.
  auto flat = client_->AtpAttention({.layer_id = "bad", .x = ClientView(x, {310})});
  EXPECT_EQ(flat.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_rank = client_->AtpAttention(
      {.layer_id = "bad", .x = ClientView(x, {10, 31}), .rank = client::RankPolicy::Fraction(1.5)});
  EXPECT_EQ(bad_rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_rank.status().message(), HasSubstr("1.5"));
  // NaN input: the worker refuses it and keeps serving.
  std::vector<float> nan = RandomValues(10 * 32, 73);
  nan[17] = std::nanf("");
  auto nan_result = client_->AtpAttention({.layer_id = "bad", .x = ClientView(nan, {10, 32})});
  EXPECT_EQ(nan_result.status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<float> good = RandomValues(10 * 32, 74);
  EXPECT_TRUE(client_->AtpAttention({.layer_id = "bad", .x = ClientView(good, {10, 32})}).ok());
}

TEST_F(ClientTest, RegistrationIsIdempotentAndOtherContentIsAlreadyExists) {
  const Weights w = RandomLinearWeights(8, 8, true, 81);
  auto first = client_->RegisterLayerWithInfo(ClientLinear("idem", w));
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = client_->RegisterLayerWithInfo(ClientLinear("idem", w));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_registered);
  EXPECT_EQ(again->digest, ClientLinear("idem", w).digest());
  const Weights other = RandomLinearWeights(8, 8, true, 82);
  auto clash = client_->RegisterLayer(ClientLinear("idem", other));
  EXPECT_EQ(clash.code(), absl::StatusCode::kAlreadyExists) << clash;
  auto layers = client_->ListLayers();
  ASSERT_TRUE(layers.ok());
  bool found = false;
  for (const auto& l : *layers) found = found || l.layer_id == "idem";
  EXPECT_TRUE(found);
  EXPECT_TRUE(client_->RemoveLayer("idem").ok());
  EXPECT_EQ(client_->RemoveLayer("idem").code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, ServerInfoAndHealth) {
  auto info = client_->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->backend, "cpu");
  EXPECT_GT(info->limits.chunk_bytes, 0u);
  EXPECT_GT(info->limits.max_inflight_per_stream, 0u);
  auto ready = client_->CheckHealth();
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(*ready, client::Readiness::kServing);
  auto live = client_->CheckHealth("");
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(*live, client::Readiness::kServing);
}

TEST_F(ClientTest, DeadlineExpiresAndTheWorkerStopsTheWork) {
  // Exact attention at L = 4096 with 32 heads takes seconds on one thread; the worker checks the
  // deadline between heads.
  const AttentionShape shape{
      .d_model = 256, .heads = 32, .kv_heads = 32, .head_dim = 8, .bias = false};
  const Weights w = RandomAttentionWeights(shape, 91);
  ASSERT_TRUE(client_->RegisterLayer(ClientAttention("slow", shape, w)).ok());
  auto before = client_->GetStatistics();
  ASSERT_TRUE(before.ok());
  const std::vector<float> x = RandomValues(4096 * 256, 92);
  client::CallOptions options;
  options.deadline = absl::Now() + absl::Milliseconds(300);
  auto r = client_->ExactAttention({.layer_id = "slow", .x = ClientView(x, {4096, 256})}, options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  // The worker abandons the request at its next check: nothing stays in flight. (Finishing the
  // compute instead would take far longer than this bound.)
  const absl::Time limit = absl::Now() + absl::Seconds(20);
  client::WorkerStatistics after;
  for (;;) {  // bounded by `limit`
    auto s = client_->GetStatistics();
    ASSERT_TRUE(s.ok());
    after = *s;
    if (after.inflight_requests == 0 && after.queue_depth == 0) break;
    ASSERT_LT(absl::Now(), limit) << "the worker still runs the expired request";
    absl::SleepFor(absl::Milliseconds(20));
  }
  const uint64_t errors_before =
      before->ops.contains("exact_attention") ? before->ops.at("exact_attention").errors : 0;
  ASSERT_TRUE(after.ops.contains("exact_attention"));
  EXPECT_EQ(after.ops.at("exact_attention").errors, errors_before + 1);
  uint64_t stopped = 0;
  for (const char* code : {"DEADLINE_EXCEEDED", "CANCELLED"}) {
    auto it = after.errors_by_code.find(code);
    if (it != after.errors_by_code.end()) stopped += it->second;
  }
  EXPECT_GE(stopped, 1u);
  // And it keeps serving.
  EXPECT_TRUE(client_->ExactAttention({.layer_id = "slow", .x = ClientView(x, {8, 256})}).ok());
}

TEST(ClientStandaloneTest, UnreachableWorkerFailsFastWithUnavailable) {
  // A port nobody listens on: bind one, note it, close it.
  auto w = WorkerProcess::Start({.binary = WorkerBinary()});
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string address = (*w)->address();
  (*w)->Kill();
  auto c = Client::Create(address);
  ASSERT_TRUE(c.ok());
  const absl::Time start = absl::Now();
  auto info = (*c)->GetServerInfo();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr(address));
  const std::vector<float> x = RandomValues(4 * 8, 1);
  auto r = (*c)->Decompose({.x = ClientView(x, {4, 8}), .rank = client::RankPolicy::Fixed(1)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));  // not the default 60 s deadline
}

TEST(ClientStandaloneTest, RestartedWorkerGetsItsLayerRegisteredAgain) {
  auto w = WorkerProcess::Start({.binary = WorkerBinary()});
  ASSERT_TRUE(w.ok()) << w.status();
  const int port = (*w)->port();
  auto c = Client::Create((*w)->address());
  ASSERT_TRUE(c.ok());
  const AttentionShape shape;
  const Weights weights = RandomAttentionWeights(shape, 101);
  ASSERT_TRUE((*c)->RegisterLayer(ClientAttention("kept", shape, weights)).ok());
  const std::vector<float> x = LowRankSequence(12, 32, 3, 102);
  const client::AtpAttentionRequest request{.layer_id = "kept", .x = ClientView(x, {12, 32})};
  auto before = (*c)->AtpAttention(request);
  ASSERT_TRUE(before.ok()) << before.status();

  (*w)->Kill();
  auto restarted = WorkerProcess::Start({.binary = WorkerBinary(), .port = port});
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  ASSERT_TRUE((*c)->WaitUntilReady(absl::Now() + kReadyTimeout).ok());
  auto after = (*c)->AtpAttention(request);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->info.attempts, 2);  // NOT_FOUND, registered again, retried
  EXPECT_EQ(Floats(after->y), Floats(before->y));
}

TEST(ClientStandaloneTest, BearerTokenIsSentOnEveryCall) {
  const std::string token_file = absl::StrCat(ScratchDir(), "/client_token");
  std::ofstream(token_file) << "s3cret\n";
  auto w = WorkerProcess::Start(
      {.binary = WorkerBinary(), .extra_args = {absl::StrCat("--token-file=", token_file)}});
  ASSERT_TRUE(w.ok()) << w.status();
  auto anonymous = Client::Create((*w)->address());
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ((*anonymous)->GetServerInfo().status().code(), absl::StatusCode::kUnauthenticated);
  client::ClientOptions options;
  options.bearer_token_file = token_file;
  auto c = Client::Create((*w)->address(), options);
  ASSERT_TRUE(c.ok());
  const std::vector<float> x = RandomValues(6 * 5, 2);
  EXPECT_TRUE(
      (*c)->Decompose({.x = ClientView(x, {6, 5}), .rank = client::RankPolicy::Fixed(2)}).ok());
  EXPECT_TRUE((*c)->RegisterLayer(ClientLinear("t", RandomLinearWeights(3, 5, false, 3))).ok());
}

// Certificates made at test time with the openssl tool: a CA, a server certificate for the name
// "localhost" only (no IP address), and a client certificate.
class ClientTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(absl::StrCat(ScratchDir(), "/client_tls"));
    const absl::Status made = MakeTestCertificates(*dir_);
    ASSERT_TRUE(made.ok()) << made;
  }
  static std::string File(const std::string& name) { return absl::StrCat(*dir_, "/", name); }
  static std::vector<std::string> TlsFlags(bool mutual) {
    std::vector<std::string> flags = {absl::StrCat("--tls-cert=", File("server.pem")),
                                      absl::StrCat("--tls-key=", File("server.key"))};
    if (mutual) flags.push_back(absl::StrCat("--tls-client-ca=", File("ca.pem")));
    return flags;
  }
  static std::string* dir_;
};

std::string* ClientTlsTest::dir_ = nullptr;

absl::Status Probe(client::Offloader& o) {
  const std::vector<float> x = RandomValues(6 * 4, 5);
  return o.Decompose({.x = ClientView(x, {6, 4}), .rank = client::RankPolicy::Fixed(2)}).status();
}

TEST_F(ClientTlsTest, ClientVerifiesTheWorkerByName) {
  auto w = WorkerProcess::Start({.binary = WorkerBinary(), .extra_args = TlsFlags(false)});
  ASSERT_TRUE(w.ok()) << w.status();
  client::ClientOptions options;
  options.tls.ca_file = File("ca.pem");
  options.tls.server_name_override = "localhost";  // the certificate names no IP address
  auto c = Client::Create((*w)->address(), options);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(Probe(**c).ok());
  // Without the name, 127.0.0.1 does not match the certificate.
  options.tls.server_name_override.clear();
  auto wrong_name = Client::Create((*w)->address(), options);
  ASSERT_TRUE(wrong_name.ok());
  EXPECT_EQ(Probe(**wrong_name).code(), absl::StatusCode::kUnavailable);
  // Plaintext against a TLS worker fails too.
  auto plain = Client::Create((*w)->address());
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(Probe(**plain).code(), absl::StatusCode::kUnavailable);
}

TEST_F(ClientTlsTest, MutualTlsNeedsTheClientCertificate) {
  auto w = WorkerProcess::Start({.binary = WorkerBinary(), .extra_args = TlsFlags(true)});
  ASSERT_TRUE(w.ok()) << w.status();
  client::ClientOptions options;
  options.tls.ca_file = File("ca.pem");
  options.tls.server_name_override = "localhost";
  auto anonymous = Client::Create((*w)->address(), options);
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ(Probe(**anonymous).code(), absl::StatusCode::kUnavailable);
  options.tls.cert_file = File("client.pem");
  options.tls.key_file = File("client.key");
  auto c = Client::Create((*w)->address(), options);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(Probe(**c).ok());
  options.tls.key_file.clear();
  EXPECT_EQ(Client::Create((*w)->address(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.tls.key_file = "/no/such/key.pem";
  auto missing = Client::Create((*w)->address(), options);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("/no/such/key.pem"));
}

TEST_F(ClientTlsTest, PoolOfADnsNameVerifiesEachAddressAgainstTheName) {
  auto w = WorkerProcess::Start({.binary = WorkerBinary(), .extra_args = TlsFlags(false)});
  ASSERT_TRUE(w.ok()) << w.status();
  client::PoolOptions options;
  options.client.tls.ca_file = File("ca.pem");
  auto pool = client::Pool::Create({absl::StrCat("dns:///localhost:", (*w)->port())}, options);
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->WaitUntilReady(1, absl::Now() + kReadyTimeout).ok());
  EXPECT_TRUE(Probe(**pool).ok());
}

}  // namespace
}  // namespace atp::testing
