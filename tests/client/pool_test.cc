// Pool against three real atp-worker processes on 127.0.0.1 (CPU backend, one thread each):
// correct results from many threads on every worker; a worker killed mid-run loses no request and
// changes no result; a worker restarted empty gets its layers back; a draining worker's traffic
// goes elsewhere; replicas; deadlines; dns:/// targets. Every wait is bounded.
#include "atp/client/pool.h"

#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "atp/client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "worker_process.h"

namespace atp::testing {
namespace {

using client::Pool;
using ::testing::HasSubstr;

constexpr absl::Duration kReadyTimeout = absl::Seconds(30);

// One layer, a set of inputs and their in-process reference outputs.
struct Workload {
  AttentionShape shape;
  Weights weights;
  std::vector<std::vector<float>> xs;
  std::vector<int64_t> lengths;
  std::vector<std::vector<float>> want;

  Workload(int n, int64_t min_len, int64_t max_len, uint64_t seed,
           AttentionShape s = {.d_model = 32, .heads = 4, .kv_heads = 2, .head_dim = 8})
      : shape(s), weights(RandomAttentionWeights(s, seed)) {
    auto layer = LocalBackend().LoadLayer(KernelAttention(shape, weights));
    EXPECT_TRUE(layer.ok()) << layer.status();
    for (int i = 0; i < n; ++i) {
      const int64_t len = min_len + (i * 7919) % (max_len - min_len + 1);
      lengths.push_back(len);
      xs.push_back(LowRankSequence(len, shape.d_model, 4, seed * 1000 + i));
      kernels::AtpAttentionArgs args;
      args.x = KernelView(xs.back(), {len, shape.d_model});
      args.rank = kernels::RankPolicy::Fixed(3);
      auto y = LocalBackend().AtpAttention(**layer, args, {});
      EXPECT_TRUE(y.ok()) << y.status();
      want.push_back(Floats(y->y));
    }
  }

  client::AtpAttentionRequest Request(const std::string& layer_id, int i) const {
    return {.layer_id = layer_id,
            .x = ClientView(xs[i], {lengths[i], shape.d_model}),
            .rank = client::RankPolicy::Fixed(3)};
  }
};

// Results of asynchronous requests, waited for with a bound.
class Results {
 public:
  explicit Results(int n) : status_(n), worker_(n), attempts_(n), y_(n) {}

  client::Callback<client::AttentionResult> Slot(int i) {
    return [this, i](absl::StatusOr<client::AttentionResult> r) {
      absl::MutexLock lock(&mu_);
      status_[i] = r.status();
      if (r.ok()) {
        worker_[i] = r->info.worker;
        attempts_[i] = r->info.attempts;
        y_[i] = Floats(r->y);
      }
      ++done_;
    };
  }
  // Waits until at least `n` are done.
  bool WaitDone(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return done_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  int done() const {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  // Every request succeeded with the reference output; returns how many were replayed.
  int ExpectAllCorrect(const Workload& w) const {
    absl::MutexLock lock(&mu_);
    int replayed = 0;
    for (size_t i = 0; i < status_.size(); ++i) {
      EXPECT_TRUE(status_[i].ok()) << i << ": " << status_[i];
      EXPECT_EQ(y_[i], w.want[i]) << "request " << i << " answered by " << worker_[i];
      if (attempts_[i] > 1) ++replayed;
    }
    return replayed;
  }
  std::vector<std::string> workers() const {
    absl::MutexLock lock(&mu_);
    return worker_;
  }
  std::vector<int> attempts() const {
    absl::MutexLock lock(&mu_);
    return attempts_;
  }

 private:
  mutable absl::Mutex mu_;
  int done_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<absl::Status> status_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> worker_ ABSL_GUARDED_BY(mu_);
  std::vector<int> attempts_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<float>> y_ ABSL_GUARDED_BY(mu_);
};

class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      auto w = WorkerProcess::Start({.binary = WorkerBinary()});
      ASSERT_TRUE(w.ok()) << w.status();
      workers_.push_back(*std::move(w));
    }
  }

  std::vector<std::string> Addresses() const {
    std::vector<std::string> out;
    for (const auto& w : workers_) out.push_back(w->address());
    return out;
  }

  std::unique_ptr<Pool> MakePool(client::PoolOptions options = {}) {
    auto pool = Pool::Create(Addresses(), options);
    EXPECT_TRUE(pool.ok()) << pool.status();
    if (!pool.ok()) return nullptr;
    EXPECT_TRUE((*pool)->WaitUntilReady(3, absl::Now() + kReadyTimeout).ok());
    return *std::move(pool);
  }

  // Waits (bounded) until the pool has a request in flight on `address`.
  static bool WaitInflight(const Pool& pool, const std::string& address, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {  // bounded
      for (const auto& w : pool.Workers()) {
        if (w.address == address && w.inflight > 0) return true;
      }
      absl::SleepFor(absl::Milliseconds(1));
    }
    return false;
  }

  static bool WaitReadiness(const Pool& pool, const std::string& address, bool serving,
                            absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {  // bounded
      for (const auto& w : pool.Workers()) {
        if (w.address == address &&
            (w.readiness == client::Readiness::kServing && !w.suspect) == serving) {
          return true;
        }
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

  std::vector<std::unique_ptr<WorkerProcess>> workers_;
};

TEST_F(PoolTest, ManyThreadsGetCorrectResultsFromEveryWorker) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const Workload w(120, 8, 64, 1);
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("attn", w.shape, w.weights)).ok());
  EXPECT_EQ(pool->PlacementOf("attn").size(), 3u);
  Results results(120);
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k) {
        const int i = t * 20 + k;
        if (k % 2 == 0) {
          auto r = pool->AtpAttention(w.Request("attn", i));
          results.Slot(i)(std::move(r));
        } else {
          pool->AtpAttentionAsync(w.Request("attn", i), results.Slot(i));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(results.WaitDone(120, absl::Seconds(120)));
  EXPECT_EQ(results.ExpectAllCorrect(w), 0);
  const std::vector<std::string> answered_by = results.workers();
  const std::set<std::string> used(answered_by.begin(), answered_by.end());
  EXPECT_EQ(used.size(), 3u) << "least-loaded scheduling spreads the requests";
  for (const auto& state : pool->Workers()) {
    EXPECT_GT(state.completed, 0u) << state.address;
    EXPECT_EQ(state.inflight, 0) << state.address;
  }
}

TEST_F(PoolTest, BatchSpreadsOverWorkers) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const Workload w(30, 16, 48, 2);
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("attn", w.shape, w.weights)).ok());
  std::vector<client::AtpAttentionRequest> requests;
  for (int i = 0; i < 30; ++i) requests.push_back(w.Request("attn", i));
  auto results = pool->AtpAttentionBatch(requests);
  std::set<std::string> used;
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_EQ(Floats(results[i]->y), w.want[i]);
    used.insert(results[i]->info.worker);
  }
  EXPECT_EQ(used.size(), 3u);
}

TEST_F(PoolTest, KilledWorkerLosesNoRequestAndChangesNoResult) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  // Longer sequences, so that requests are in flight on every worker when one dies.
  const Workload w(90, 192, 320, 3, {.d_model = 64, .heads = 8, .kv_heads = 4, .head_dim = 8});
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("attn", w.shape, w.weights)).ok());
  Results results(90);
  for (int i = 0; i < 90; ++i) pool->AtpAttentionAsync(w.Request("attn", i), results.Slot(i));
  ASSERT_TRUE(results.WaitDone(10, absl::Seconds(60)));
  const std::string victim = workers_[1]->address();
  ASSERT_TRUE(WaitInflight(*pool, victim, absl::Seconds(30)));
  workers_[1]->Kill();
  ASSERT_TRUE(results.WaitDone(90, absl::Seconds(120))) << results.done() << " of 90 done";
  EXPECT_GE(results.ExpectAllCorrect(w), 1) << "the victim's requests in flight were replayed";
  // Replayed requests were answered by the survivors.
  const auto workers = results.workers();
  const auto attempts = results.attempts();
  for (size_t i = 0; i < workers.size(); ++i) {
    if (attempts[i] > 1) EXPECT_NE(workers[i], victim) << i;
  }
}

TEST_F(PoolTest, RestartedWorkerGetsItsLayersBack) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const Workload w(40, 16, 32, 4);
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("attn", w.shape, w.weights)).ok());
  const int port = workers_[2]->port();
  const std::string victim = workers_[2]->address();
  workers_[2]->Kill();
  auto restarted = WorkerProcess::Start({.binary = WorkerBinary(), .port = port});
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  workers_[2] = *std::move(restarted);
  ASSERT_TRUE(WaitReadiness(*pool, victim, true, kReadyTimeout));
  // Sequential requests rotate over the idle workers, so some land on the restarted one, which
  // answers NOT_FOUND first and gets the layer registered again.
  bool reregistered = false;
  for (int i = 0; i < 40; ++i) {
    client::CallOptions options;
    options.deadline = absl::Now() + absl::Seconds(5);
    auto r = pool->AtpAttention(w.Request("attn", i), options);
    ASSERT_TRUE(r.ok()) << r.status() << "\n" << workers_[2]->log();
    EXPECT_EQ(Floats(r->y), w.want[i]);
    if (r->info.worker == victim && r->info.attempts == 2) reregistered = true;
  }
  EXPECT_TRUE(reregistered);
  auto direct = client::Client::Create(victim);
  ASSERT_TRUE(direct.ok());
  auto layers = (*direct)->ListLayers();
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), 1u);
  EXPECT_EQ((*layers)[0].layer_id, "attn");
}

TEST_F(PoolTest, DrainingWorkerFinishesItsWorkAndGetsNoMore) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const Workload w(80, 128, 256, 5, {.d_model = 64, .heads = 8, .kv_heads = 4, .head_dim = 8});
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("attn", w.shape, w.weights)).ok());
  Results results(60);
  for (int i = 0; i < 60; ++i) pool->AtpAttentionAsync(w.Request("attn", i), results.Slot(i));
  const std::string victim = workers_[0]->address();
  ASSERT_TRUE(WaitInflight(*pool, victim, absl::Seconds(30)));
  workers_[0]->Terminate();  // SIGTERM: NOT_SERVING, finish in-flight work, exit 0
  ASSERT_TRUE(WaitReadiness(*pool, victim, false, absl::Seconds(30)));
  // New requests while it drains go elsewhere.
  for (int i = 60; i < 80; ++i) {
    auto r = pool->AtpAttention(w.Request("attn", i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->info.worker, victim);
    EXPECT_EQ(Floats(r->y), w.want[i]);
  }
  ASSERT_TRUE(results.WaitDone(60, absl::Seconds(120)));
  results.ExpectAllCorrect(w);
  auto code = workers_[0]->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << workers_[0]->log();
}

TEST_F(PoolTest, ReplicasPlaceALayerOnTwoWorkersAndMoveItWhenBothDie) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const Workload w(30, 8, 24, 6);
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("attn", w.shape, w.weights),
                                  client::Placement{.replicas = 2})
                  .ok());
  const std::vector<std::string> placed = pool->PlacementOf("attn");
  ASSERT_EQ(placed.size(), 2u);
  for (int i = 0; i < 10; ++i) {
    auto r = pool->AtpAttention(w.Request("attn", i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_THAT(placed, ::testing::Contains(r->info.worker));
    EXPECT_EQ(Floats(r->y), w.want[i]);
  }
  std::string spare;
  for (const auto& worker : workers_) {
    if (std::find(placed.begin(), placed.end(), worker->address()) == placed.end()) {
      spare = worker->address();
    } else {
      worker->Kill();
    }
  }
  for (int i = 10; i < 30; ++i) {
    auto r = pool->AtpAttention(w.Request("attn", i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->info.worker, spare);
    EXPECT_EQ(Floats(r->y), w.want[i]);
  }
  EXPECT_THAT(pool->PlacementOf("attn"), ::testing::Contains(spare));
}

TEST_F(PoolTest, RequestsFailWithTheirOwnErrorsWithoutReplay) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const Workload w(1, 8, 8, 7);
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("attn", w.shape, w.weights)).ok());
  const std::vector<float> x = RandomValues(8 * 31, 8);
  auto r = pool->AtpAttention({.layer_id = "attn", .x = ClientView(x, {8, 31})});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  auto unknown = pool->AtpAttention({.layer_id = "nope", .x = ClientView(x, {8, 31})});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << unknown.status();
  uint64_t failed = 0;
  for (const auto& s : pool->Workers()) failed += s.failed;
  EXPECT_EQ(failed, 2u) << "one attempt each";
}

TEST_F(PoolTest, RemoveLayerRemovesItFromEveryWorker) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  const Workload w(1, 8, 8, 11);
  ASSERT_TRUE(pool->RegisterLayer(ClientAttention("gone", w.shape, w.weights)).ok());
  ASSERT_TRUE(pool->AtpAttention(w.Request("gone", 0)).ok());
  EXPECT_TRUE(pool->RemoveLayer("gone").ok());
  EXPECT_EQ(pool->RemoveLayer("gone").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(pool->PlacementOf("gone").empty());
  for (const auto& worker : workers_) {
    auto c = client::Client::Create(worker->address());
    ASSERT_TRUE(c.ok());
    auto layers = (*c)->ListLayers();
    ASSERT_TRUE(layers.ok()) << layers.status();
    EXPECT_TRUE(layers->empty()) << worker->address();
  }
  // A request for it now fails as unknown, without being replayed.
  EXPECT_EQ(pool->AtpAttention(w.Request("gone", 0)).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PoolTest, DeadlineExpiresWhenNoWorkerIsReady) {
  const std::string address = workers_[0]->address();
  for (auto& worker : workers_) worker->Kill();
  auto pool = Pool::Create({address});
  ASSERT_TRUE(pool.ok());
  const std::vector<float> x = RandomValues(4 * 8, 9);
  client::CallOptions options;
  options.deadline = absl::Now() + absl::Milliseconds(300);
  auto r = (*pool)->Decompose({.x = ClientView(x, {4, 8}), .rank = client::RankPolicy::Fixed(1)},
                              options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr(address));
  EXPECT_FALSE((*pool)->WaitUntilReady(1, absl::Now() + absl::Milliseconds(100)).ok());
}

TEST_F(PoolTest, DnsTargetResolvesToTheWorkers) {
  const int port = workers_[0]->port();
  auto pool = Pool::Create({absl::StrCat("dns:///localhost:", port)});
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->WaitUntilReady(1, absl::Now() + kReadyTimeout).ok());
  bool found = false;
  for (const auto& s : (*pool)->Workers()) found = found || s.address == workers_[0]->address();
  EXPECT_TRUE(found);
  const Workload w(3, 8, 8, 10);
  ASSERT_TRUE((*pool)->RegisterLayer(ClientAttention("attn", w.shape, w.weights)).ok());
  auto r = (*pool)->AtpAttention(w.Request("attn", 0));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Floats(r->y), w.want[0]);
  EXPECT_EQ(r->info.worker, workers_[0]->address());
  EXPECT_EQ(Pool::Create({"dns:///no-port"}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atp::testing
