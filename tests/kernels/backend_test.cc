// The CPU backend as a Backend: factory, description, memory, resident bytes, cancellation through
// ExecContext between compute steps, thread settings and concurrent calls.
#include "atp/kernels/backend.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "oracle.h"
#include "test_util.h"

namespace atp::kernels {
namespace {

using testing::FreshSeed;
using ::testing::HasSubstr;
using testing::Rng;
using testing::SeedTrace;
using testing::ToMat;
using testing::ToTensor;

TEST(CpuBackendTest, FactoryDescriptionAndHealth) {
  absl::StatusOr<std::unique_ptr<Backend>> cpu = CreateBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu");
  EXPECT_THAT((*cpu)->device_description(), HasSubstr("OpenBLAS"));
  EXPECT_TRUE((*cpu)->health().ok());
  absl::StatusOr<std::unique_ptr<Backend>> other = CreateBackend("tpu");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(other.status().message(), "unknown backend \"tpu\", want auto, cpu or cuda");
}

TEST(CpuBackendTest, ReportsSystemMemory) {
  auto backend = CreateCpuBackend();
  const MemoryInfo memory = backend->memory();
  EXPECT_GT(memory.total_bytes, uint64_t{64} << 20);
  EXPECT_GT(memory.free_bytes, 0u);
  EXPECT_LE(memory.free_bytes, memory.total_bytes);
}

TEST(CpuBackendTest, ResidentBytesCountWeightsAndTheirF32Copies) {
  Rng rng(3);
  auto backend = CreateCpuBackend();
  testing::AttentionShape s;  // d = 16, q/k/v/o [16,16] with biases [16]
  const uint64_t elements = 4 * (16 * 16 + 16);
  auto f32 = backend->LoadLayer(testing::RandomAttentionLayer(rng, s, DType::kF32).spec);
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ((*f32)->resident_bytes(), elements * 4);  // used in place
  auto bf16 = backend->LoadLayer(testing::RandomAttentionLayer(rng, s, DType::kBF16).spec);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ((*bf16)->resident_bytes(), elements * (2 + 4));  // bf16 spec + f32 copies
  EXPECT_EQ((*bf16)->spec().weights.at("q_proj.weight").dtype(), DType::kBF16);
}

// An ExecContext that cancels on its n-th Check() and counts the calls.
struct CancelAt {
  int n;
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  ExecContext context() const {
    return ExecContext{[n = n, calls = calls]() -> absl::Status {
      if (++*calls == n) return absl::CancelledError("cancelled by the test");
      return absl::OkStatus();
    }};
  }
};

// Cancels an op at each of its checkpoints in turn: every one returns CANCELLED, and once the
// cancellation comes after the last checkpoint the op succeeds. Returns the number of checkpoints.
template <typename Op>
int ExpectCancellableAtEveryCheckpoint(const Op& op) {
  constexpr int kMaxCheckpoints = 200;
  for (int n = 1; n <= kMaxCheckpoints; ++n) {
    CancelAt cancel{n};
    const absl::Status status = op(cancel.context());
    if (status.ok()) return n - 1;
    EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
    EXPECT_EQ(status.message(), "cancelled by the test");
  }
  ADD_FAILURE() << "never finished";
  return kMaxCheckpoints;
}

TEST(CpuBackendTest, EveryOpStopsWhenItsContextSaysSo) {
  Rng rng(4);
  // One thread: heads then run one at a time, with a checkpoint after each.
  auto backend = CreateCpuBackend(CpuBackendOptions{.threads = 1});
  testing::AttentionShape s;
  s.d_model = 160;
  s.heads = 4;
  s.head_dim = 8;
  auto layer = *backend->LoadLayer(testing::RandomAttentionLayer(rng, s).spec);
  const Tensor x = ToTensor(testing::RandomMat(rng, 150, 160));

  const int decompose = ExpectCancellableAtEveryCheckpoint([&](const ExecContext& ctx) {
    PrincipalBasesArgs args;
    args.x = x.view();
    args.rank = RankPolicy::Fixed(4);
    args.method = DecomposeMethod::kRandomized;
    return backend->Decompose(args, ctx).status();
  });
  EXPECT_GE(decompose, 3);  // before, and between the iterations
  const int atp = ExpectCancellableAtEveryCheckpoint([&](const ExecContext& ctx) {
    AtpAttentionArgs args;
    args.x = x.view();
    args.rank = RankPolicy::Fixed(4);
    return backend->AtpAttention(*layer, args, ctx).status();
  });
  EXPECT_GE(atp, decompose + s.heads);  // the basis, then between projections and heads
  const int exact = ExpectCancellableAtEveryCheckpoint([&](const ExecContext& ctx) {
    ExactAttentionArgs args;
    args.x = x.view();
    return backend->ExactAttention(*layer, args, ctx).status();
  });
  EXPECT_GE(exact, 2 + s.heads);
  const int linear = ExpectCancellableAtEveryCheckpoint([&](const ExecContext& ctx) {
    LowRankLinearArgs args;
    args.weight = "q_proj";
    args.x = x.view();
    args.rank = RankPolicy::Fixed(4);
    return backend->LowRankLinear(*layer, args, ctx).status();
  });
  EXPECT_GE(linear, 2);
  // A deadline passes through unchanged.
  ExactAttentionArgs args;
  args.x = x.view();
  ExecContext expired{[] { return absl::DeadlineExceededError("deadline passed"); }};
  EXPECT_EQ(backend->ExactAttention(*layer, args, expired).status(),
            absl::DeadlineExceededError("deadline passed"));
}

TEST(CpuBackendTest, OneThreadAndManyThreadsAgree) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  testing::AttentionShape s;
  s.d_model = 32;
  s.heads = 4;
  s.head_dim = 8;
  const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  const Tensor x = ToTensor(testing::RandomMat(rng, 600, 32));
  std::vector<oracle::Mat> outputs;
  for (int threads : {1, 2, 3}) {
    CpuBackendOptions options;
    options.threads = threads;
    auto backend = CreateCpuBackend(options);
    EXPECT_THAT(backend->device_description(), HasSubstr(std::to_string(threads) + " threads"));
    auto handle = *backend->LoadLayer(testing::Clone(layer.spec));
    ExactAttentionArgs args;
    args.x = x.view();
    args.causal = true;
    absl::StatusOr<Tensor> y = backend->ExactAttention(*handle, args, {});
    ASSERT_TRUE(y.ok()) << y.status();
    outputs.push_back(ToMat(*y));
  }
  EXPECT_LE(oracle::RelativeError(outputs[1], outputs[0]), 1e-6);
  EXPECT_LE(oracle::RelativeError(outputs[2], outputs[0]), 1e-6);
  // Leave OpenBLAS with one thread per core, its default.
  CreateCpuBackend(
      CpuBackendOptions{.threads = static_cast<int>(std::thread::hardware_concurrency())});
}

TEST(CpuBackendTest, ConcurrentCallsOnOneLayerGiveTheSequentialResult) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = CreateCpuBackend();
  testing::AttentionShape s;
  s.d_model = 24;
  s.heads = 2;
  s.head_dim = 6;
  auto layer = *backend->LoadLayer(testing::RandomAttentionLayer(rng, s).spec);
  const Tensor x = ToTensor(testing::RandomMat(rng, 50, 24));
  AtpAttentionArgs args;
  args.x = x.view();
  args.rank = RankPolicy::Fixed(5);
  const oracle::Mat want = ToMat(backend->AtpAttention(*layer, args, {})->y);
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 10;
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        absl::StatusOr<AtpAttentionResult> got = backend->AtpAttention(*layer, args, {});
        if (!got.ok() || oracle::RelativeError(ToMat(got->y), want) > 1e-6) ++mismatches;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace atp::kernels
