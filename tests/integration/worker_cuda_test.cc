// The worker end to end on the GPU (issue 6, item 4): a real `atp-worker --backend cuda` on
// 127.0.0.1, driven through the client SDK. Every op — ATP attention, exact attention causal and
// not, low-rank linear with dense and factored input and output, decompose — in f32 and bf16:
// the worker's results equal the in-process CUDA backend's bit for bit (same code, same device,
// same seed), and match the f64 oracle within DESIGN.md §1's tolerances (1e-4 for f32, 2e-2 for
// bf16). Bad requests get their in-band error, the requests beside them on the same stream are
// unaffected, and the worker stays ready. Device scratch memory is poisoned (ATP_CUDA_POISON) in
// both the worker and the in-process backend, so unwritten elements fail the oracle checks.
//
// Every test skips itself without a usable CUDA device. The worker binary is $ATP_WORKER_BINARY,
// else the one this build made. ATP_TEST_BACKEND=cpu runs the same checks on the CPU backend (in
// the worker and in process), so that the harness itself is tested where there is no GPU.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../client/worker_process.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "atp/client/client.h"
#include "atp/client/layer.h"
#include "atp/client/ops.h"
#include "atp/client/tensor.h"
#include "atp/kernels/backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "oracle.h"
#include "test_util.h"

namespace atp::kernels {
// Test parameters print as "f32"/"bf16".
void PrintTo(DType dtype, std::ostream* os) { *os << DTypeName(dtype); }
}  // namespace atp::kernels

namespace atp::testing {
namespace {

using kernels::DType;
using oracle::Mat;
using ::testing::HasSubstr;

// Tolerance of DESIGN.md §1 for a computation whose inputs are `dtype`.
double Tolerance(DType dtype) { return dtype == DType::kF32 ? 1e-4 : 2e-2; }

client::DType ClientDType(DType dtype) { return static_cast<client::DType>(dtype); }

client::TensorView ClientView(const kernels::Tensor& t) {
  return client::TensorView(ClientDType(t.dtype()), t.shape(), t.data());
}

// A client result as a kernels tensor (a copy), for the oracle helpers.
kernels::Tensor KernelCopy(const client::Tensor& t) {
  return kernels::Tensor::CopyOf(
      kernels::TensorView{static_cast<DType>(t.dtype()), t.shape(), t.data()});
}

Mat ClientMat(const client::Tensor& t) { return ToMat(KernelCopy(t)); }

// Bit-for-bit equality of a result through the worker and one computed in process.
void ExpectSameBits(const client::Tensor& worker, const kernels::Tensor& local,
                    const std::string& what) {
  ASSERT_EQ(static_cast<int>(worker.dtype()), static_cast<int>(local.dtype())) << what;
  ASSERT_EQ(worker.shape(), local.shape()) << what;
  ASSERT_EQ(worker.byte_size(), local.byte_size()) << what;
  EXPECT_EQ(std::memcmp(worker.data(), local.data(), local.byte_size()), 0)
      << what << ": the worker's result differs from the in-process CUDA backend's (relative "
      << oracle::RelativeError(ClientMat(worker), ToMat(local)) << ")";
}

// Singular values spread so that every singular vector is well determined, and the randomized
// basis finds the exact one.
std::vector<double> GappedSpectrum(int64_t m, double top = 8.0, double ratio = 0.85) {
  std::vector<double> s(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) s[i] = top * std::pow(ratio, static_cast<double>(i));
  return s;
}

absl::StatusOr<client::LayerSpec> ClientAttention(const std::string& id,
                                                  const kernels::LayerSpec& spec) {
  client::AttentionConfig c;
  c.d_model = spec.attention.d_model;
  c.num_heads = spec.attention.num_heads;
  c.num_kv_heads = spec.attention.num_kv_heads;
  c.head_dim = spec.attention.head_dim;
  c.scale = spec.attention.scale;
  c.key_scale = spec.attention.key_scale == kernels::KeyScale::kInvSqrtLen
                    ? client::KeyScale::kInvSqrtLen
                    : client::KeyScale::kNone;
  std::map<std::string, client::TensorView> weights;
  for (const auto& [name, tensor] : spec.weights) weights[name] = ClientView(tensor);
  return client::LayerSpec::Attention(id, c, weights);
}

absl::StatusOr<client::LayerSpec> ClientLinear(const std::string& id,
                                               const kernels::LayerSpec& spec) {
  std::optional<client::TensorView> bias;
  if (auto b = spec.weights.find("bias"); b != spec.weights.end()) bias = ClientView(b->second);
  return client::LayerSpec::Linear(id, ClientView(spec.weights.at("weight")), bias);
}

// "cuda", or "cpu" when ATP_TEST_BACKEND=cpu: the same checks on the CPU backend (worker and
// in-process, one thread each), which proves this harness on machines without a GPU.
std::string BackendKind() {
  const char* kind = std::getenv("ATP_TEST_BACKEND");
  return kind != nullptr && std::string(kind) == "cpu" ? "cpu" : "cuda";
}

absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateTestBackend() {
  if (BackendKind() == "cuda") return kernels::CreateCudaBackend(0);
  kernels::CpuBackendOptions options;
  options.threads = 1;  // as the worker runs (WorkerProcess passes --threads=1)
  options.poison_outputs = true;
  return kernels::CreateCpuBackend(options);
}

class WorkerCudaTest : public ::testing::TestWithParam<DType> {
 protected:
  static void SetUpTestSuite() {
    // Scratch memory poisoned in this process and in the worker, which inherits the environment.
    setenv("ATP_CUDA_POISON", "1", /*overwrite=*/1);
    absl::StatusOr<std::unique_ptr<kernels::Backend>> backend = CreateTestBackend();
    if (!backend.ok()) {
      skip_reason_ =
          new std::string(absl::StrCat("no usable CUDA device: ", backend.status().ToString()));
      return;
    }
    backend_ = backend->release();
    WorkerProcessOptions options;
    options.binary = WorkerBinary();
    options.extra_args = {absl::StrCat("--backend=", BackendKind()), "--device=0"};
    absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
        WorkerProcess::Start(options, absl::Seconds(90));
    if (!worker.ok()) {
      setup_error_ = new std::string(worker.status().ToString());
      return;
    }
    worker_ = worker->release();
    absl::StatusOr<std::unique_ptr<client::Client>> client =
        client::Client::Create(worker_->address());
    if (!client.ok()) {
      setup_error_ = new std::string(client.status().ToString());
      return;
    }
    client_ = client->release();
    if (absl::Status s = client_->WaitUntilReady(absl::Now() + absl::Seconds(60)); !s.ok()) {
      setup_error_ = new std::string(absl::StrCat(s.ToString(), "\nworker log:\n", worker_->log()));
    }
  }

  static void TearDownTestSuite() {
    delete client_;
    client_ = nullptr;
    if (worker_ != nullptr) {
      worker_->Terminate();
      (void)worker_->WaitExit(absl::Seconds(30));
    }
    delete worker_;  // SIGKILLs it if it still runs
    worker_ = nullptr;
    delete backend_;
    backend_ = nullptr;
  }

  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_EQ(setup_error_, nullptr) << *setup_error_;
    absl::StatusOr<client::ServerInfo> info = client_->GetServerInfo();
    ASSERT_TRUE(info.ok()) << info.status();
    max_rank_ = info->limits.max_rank;
  }

  // The worker's rank limit, which it passes to the backend (so the in-process calls do too).
  int64_t max_rank_ = 0;

  static std::string* skip_reason_;
  static std::string* setup_error_;
  static kernels::Backend* backend_;
  static WorkerProcess* worker_;
  static client::Client* client_;
};

std::string* WorkerCudaTest::skip_reason_ = nullptr;
std::string* WorkerCudaTest::setup_error_ = nullptr;
kernels::Backend* WorkerCudaTest::backend_ = nullptr;
WorkerProcess* WorkerCudaTest::worker_ = nullptr;
client::Client* WorkerCudaTest::client_ = nullptr;

TEST_P(WorkerCudaTest, ServesOnTheCudaBackend) {
  absl::StatusOr<client::ServerInfo> info = client_->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->backend, BackendKind());
  EXPECT_FALSE(info->device.empty());
  absl::StatusOr<client::Readiness> ready = client_->CheckHealth();
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(*ready, client::Readiness::kServing);
}

struct AttentionCase {
  int64_t length;
  AttentionShape shape;
};

std::vector<AttentionCase> AttentionCases() {
  auto shape = [](int64_t d, int64_t h, int64_t hkv, int64_t dh, bool biases,
                  kernels::KeyScale ks) {
    AttentionShape s;
    s.d_model = d;
    s.heads = h;
    s.kv_heads = hkv;
    s.head_dim = dh;
    s.biases = biases;
    s.key_scale = ks;
    return s;
  };
  return {
      {37, shape(24, 4, 2, 6, true, kernels::KeyScale::kNone)},          // L > d, GQA, odd L
      {1, shape(16, 2, 1, 8, true, kernels::KeyScale::kInvSqrtLen)},     // one token
      {300, shape(128, 2, 2, 64, false, kernels::KeyScale::kNone)},      // cuDNN-sized heads
      {90, shape(160, 4, 1, 40, true, kernels::KeyScale::kInvSqrtLen)},  // L < d, one KV head
  };
}

TEST_P(WorkerCudaTest, AttentionThroughTheWorkerEqualsInProcessAndMatchesOracle) {
  const DType dtype = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  int case_index = 0;
  for (const AttentionCase& c : AttentionCases()) {
    const AttentionShape& s = c.shape;
    const std::string id = absl::StrCat("it.attn.", kernels::DTypeName(dtype), ".", case_index++);
    SCOPED_TRACE(absl::StrCat(id, ": L=", c.length, " d=", s.d_model, " H=", s.heads, "/",
                              s.kv_heads, " dh=", s.head_dim));
    const AttentionLayer layer = RandomAttentionLayer(rng, s, dtype);
    absl::StatusOr<client::LayerSpec> spec = ClientAttention(id, layer.spec);
    ASSERT_TRUE(spec.ok()) << spec.status();
    ASSERT_TRUE(client_->RegisterLayer(*spec).ok());
    absl::StatusOr<std::unique_ptr<kernels::LayerHandle>> local =
        backend_->LoadLayer(Clone(layer.spec));
    ASSERT_TRUE(local.ok()) << local.status();

    const int64_t m = std::min(c.length, s.d_model);
    const Mat x = Rounded(WithSpectrum(rng, c.length, s.d_model, GappedSpectrum(m)), dtype);
    const kernels::Tensor xt = ToTensor(x, dtype);

    // ATP attention at a few fixed ranks, then under an energy policy (bits only: its rank is
    // decided at a threshold the f64 oracle may see on the other side).
    for (int64_t r : {int64_t{1}, (m + 1) / 2, m}) {
      SCOPED_TRACE(absl::StrCat("ATP r=", r));
      client::AtpAttentionRequest request{
          .layer_id = id, .x = ClientView(xt), .rank = client::RankPolicy::Fixed(r)};
      absl::StatusOr<client::AttentionResult> got = client_->AtpAttention(request);
      ASSERT_TRUE(got.ok()) << got.status();
      kernels::AtpAttentionArgs args;
      args.x = xt.view();
      args.rank = kernels::RankPolicy::Fixed(r);
      args.max_rank = max_rank_;
      args.output_dtype = dtype;
      absl::StatusOr<kernels::AtpAttentionResult> want =
          backend_->AtpAttention(**local, args, kernels::ExecContext{});
      ASSERT_TRUE(want.ok()) << want.status();
      ExpectSameBits(got->y, want->y, "ATP attention");
      EXPECT_EQ(got->rank, want->rank);
      EXPECT_EQ(got->captured_energy, want->captured_energy);
      const oracle::AtpOut oracle_y =
          oracle::AtpAttention(layer.oracle, x, {oracle::Rank::Kind::kFixed, double(r)});
      EXPECT_EQ(got->rank, r);
      EXPECT_NEAR(got->captured_energy, oracle_y.captured_energy, 1e-5);
      EXPECT_LE(oracle::RelativeError(ClientMat(got->y), oracle_y.y), Tolerance(dtype));
    }
    {
      client::AtpAttentionRequest request{
          .layer_id = id, .x = ClientView(xt), .rank = client::RankPolicy::Energy(0.9, 6)};
      absl::StatusOr<client::AttentionResult> got = client_->AtpAttention(request);
      ASSERT_TRUE(got.ok()) << got.status();
      kernels::AtpAttentionArgs args;
      args.x = xt.view();
      args.rank = kernels::RankPolicy::Energy(0.9, 6);
      args.max_rank = max_rank_;
      args.output_dtype = dtype;
      absl::StatusOr<kernels::AtpAttentionResult> want =
          backend_->AtpAttention(**local, args, kernels::ExecContext{});
      ASSERT_TRUE(want.ok()) << want.status();
      ExpectSameBits(got->y, want->y, "ATP attention, energy policy");
      EXPECT_EQ(got->rank, want->rank);
    }

    // Exact attention, causal and not, in the input's dtype and in f32.
    for (bool causal : {false, true}) {
      const Mat oracle_y = oracle::ExactAttention(layer.oracle, x, causal);
      for (DType out : {dtype, DType::kF32}) {
        SCOPED_TRACE(
            absl::StrCat("exact", causal ? " causal" : "", " out=", kernels::DTypeName(out)));
        client::ExactAttentionRequest request{.layer_id = id,
                                              .x = ClientView(xt),
                                              .causal = causal,
                                              .output_dtype = ClientDType(out)};
        absl::StatusOr<client::AttentionResult> got = client_->ExactAttention(request);
        ASSERT_TRUE(got.ok()) << got.status();
        kernels::ExactAttentionArgs args;
        args.x = xt.view();
        args.causal = causal;
        args.output_dtype = out;
        absl::StatusOr<kernels::Tensor> want =
            backend_->ExactAttention(**local, args, kernels::ExecContext{});
        ASSERT_TRUE(want.ok()) << want.status();
        ExpectSameBits(got->y, *want, "exact attention");
        EXPECT_LE(
            oracle::RelativeError(ClientMat(got->y), oracle_y),
            Tolerance(dtype == DType::kF32 && out == DType::kF32 ? DType::kF32 : DType::kBF16));
      }
    }
    ASSERT_TRUE(client_->RemoveLayer(id).ok());
  }
}

TEST_P(WorkerCudaTest, LowRankLinearThroughTheWorkerEqualsInProcessAndMatchesOracle) {
  const DType dtype = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  int case_index = 0;
  for (bool bias : {true, false}) {
    const int64_t L = 53, d = 29, n = 19, r = 6;
    const std::string id = absl::StrCat("it.linear.", kernels::DTypeName(dtype), ".", case_index++);
    SCOPED_TRACE(absl::StrCat(id, bias ? " with bias" : " without bias"));
    const LinearLayer layer = RandomLinearLayer(rng, n, d, bias, dtype);
    absl::StatusOr<client::LayerSpec> spec = ClientLinear(id, layer.spec);
    ASSERT_TRUE(spec.ok()) << spec.status();
    ASSERT_TRUE(client_->RegisterLayer(*spec).ok());
    absl::StatusOr<std::unique_ptr<kernels::LayerHandle>> local =
        backend_->LoadLayer(Clone(layer.spec));
    ASSERT_TRUE(local.ok()) << local.status();
    const Mat w = Rounded(layer.w, dtype);
    const std::vector<double> b = Rounded(layer.b, dtype);

    // Dense input, decomposed on the worker at rank r.
    const Mat x = Rounded(WithSpectrum(rng, L, d, GappedSpectrum(d)), dtype);
    const kernels::Tensor xt = ToTensor(x, dtype);
    const oracle::Bases bases = oracle::PrincipalBases(x, {oracle::Rank::Kind::kFixed, double(r)});
    Mat c = bases.vt;
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t j = 0; j < d; ++j) c(i, j) *= bases.s[i];
    }
    const Mat want_dense = oracle::LowRankLinear(bases.u, c, w, b);
    // Factored input, used as given (the wire wants u and c of one dtype).
    const Mat u = Rounded(RandomMat(rng, L, r), dtype);
    const Mat cf = Rounded(RandomMat(rng, r, d), dtype);
    const kernels::Tensor ut = ToTensor(u, dtype), ct = ToTensor(cf, dtype);
    const Mat want_factored_in = oracle::LowRankLinear(u, cf, w, b);

    for (bool factored_in : {false, true}) {
      for (bool factored_out : {false, true}) {
        SCOPED_TRACE(absl::StrCat(factored_in ? "factored" : "dense", " input, ",
                                  factored_out ? "factored" : "dense", " output"));
        client::LowRankLinearRequest request;
        request.layer_id = id;
        request.factored_output = factored_out;
        kernels::LowRankLinearArgs args;
        args.max_rank = max_rank_;
        args.factored_output = factored_out;
        args.output_dtype = dtype;
        if (factored_in) {
          request.input = client::FactoredTensorView{ClientView(ut), ClientView(ct)};
          args.factored_input = true;
          args.u = ut.view();
          args.c = ct.view();
        } else {
          request.input = ClientView(xt);
          request.rank = client::RankPolicy::Fixed(r);
          args.x = xt.view();
          args.rank = kernels::RankPolicy::Fixed(r);
        }
        absl::StatusOr<client::LowRankLinearResult> got = client_->LowRankLinear(request);
        ASSERT_TRUE(got.ok()) << got.status();
        absl::StatusOr<kernels::LowRankLinearResult> want =
            backend_->LowRankLinear(**local, args, kernels::ExecContext{});
        ASSERT_TRUE(want.ok()) << want.status();
        EXPECT_EQ(got->rank, r);
        EXPECT_EQ(got->rank, want->rank);
        EXPECT_EQ(got->captured_energy, want->captured_energy);
        ASSERT_EQ(got->factored, factored_out);
        Mat y;
        if (factored_out) {
          ExpectSameBits(got->y_factored.u, want->u, "factored output U'");
          ExpectSameBits(got->y_factored.c, want->c, "factored output C'");
          EXPECT_EQ(got->y_factored.u.dim(1), bias ? r + 1 : r);
          y = oracle::MatMul(ClientMat(got->y_factored.u), ClientMat(got->y_factored.c));
        } else {
          ExpectSameBits(got->y, want->y, "dense output");
          y = ClientMat(got->y);
        }
        EXPECT_LE(oracle::RelativeError(y, factored_in ? want_factored_in : want_dense),
                  Tolerance(dtype));
      }
    }
    ASSERT_TRUE(client_->RemoveLayer(id).ok());
  }
}

TEST_P(WorkerCudaTest, DecomposeThroughTheWorkerEqualsInProcessAndMatchesOracle) {
  const DType dtype = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  // Small (exact method) and min(L, d) > 128 with a small r (randomized method), both
  // orientations.
  for (auto [L, d, r] : {std::tuple<int64_t, int64_t, int64_t>{33, 17, 5},
                         {17, 40, 17},
                         {400, 160, 12},
                         {170, 300, 8}}) {
    SCOPED_TRACE(absl::StrCat("L=", L, " d=", d, " r=", r));
    const int64_t m = std::min(L, d);
    std::vector<double> sigma(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) {
      sigma[i] = i < r ? 30 * std::pow(0.85, double(i)) : 0.3 * std::pow(0.99, double(i));
    }
    const Mat x = Rounded(WithSpectrum(rng, L, d, sigma), dtype);
    const kernels::Tensor xt = ToTensor(x, dtype);
    client::DecomposeRequest request{.x = ClientView(xt), .rank = client::RankPolicy::Fixed(r)};
    absl::StatusOr<client::DecomposeResult> got = client_->Decompose(request);
    ASSERT_TRUE(got.ok()) << got.status();
    kernels::PrincipalBasesArgs args;
    args.x = xt.view();
    args.rank = kernels::RankPolicy::Fixed(r);
    args.method = kernels::DecomposeMethod::kAuto;
    args.max_rank = max_rank_;
    args.output_dtype = dtype;
    absl::StatusOr<kernels::PrincipalBases> want =
        backend_->Decompose(args, kernels::ExecContext{});
    ASSERT_TRUE(want.ok()) << want.status();
    ExpectSameBits(got->u, want->u, "U");
    ExpectSameBits(got->s, want->s, "singular values");
    ExpectSameBits(got->vt, want->vt, "Vt");
    ASSERT_EQ(got->rank, r);
    EXPECT_EQ(got->captured_energy, want->captured_energy);

    const oracle::Svd svd = oracle::ThinSvd(x);
    const std::vector<double> s = ToVec(KernelCopy(got->s));
    for (int64_t i = 0; i < r; ++i) EXPECT_NEAR(s[i] / svd.s[i], 1.0, 1e-3) << "σ" << i;
    EXPECT_LE(oracle::RelativeError(ClientMat(got->u), Columns(svd.u, r)), Tolerance(dtype));
    EXPECT_LE(oracle::RelativeError(ClientMat(got->vt), Rows(svd.vt, r)), Tolerance(dtype));
  }
}

TEST_P(WorkerCudaTest, BadRequestsGetInBandErrorsAndTheWorkerStaysReady) {
  const DType dtype = GetParam();
  Rng rng(FreshSeed());
  AttentionShape s;
  s.d_model = 16;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 8;
  const std::string id = absl::StrCat("it.bad.", kernels::DTypeName(dtype));
  const AttentionLayer layer = RandomAttentionLayer(rng, s, dtype);
  absl::StatusOr<client::LayerSpec> spec = ClientAttention(id, layer.spec);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(client_->RegisterLayer(*spec).ok());
  absl::StatusOr<std::unique_ptr<kernels::LayerHandle>> local =
      backend_->LoadLayer(Clone(layer.spec));
  ASSERT_TRUE(local.ok()) << local.status();

  const kernels::Tensor good = ToTensor(Rounded(RandomMat(rng, 9, 16), dtype), dtype);
  const kernels::Tensor wrong_width = ToTensor(RandomMat(rng, 5, 15), dtype);
  Mat nan = RandomMat(rng, 5, 16);
  nan(3, 2) = std::numeric_limits<double>::quiet_NaN();
  const kernels::Tensor with_nan = ToTensor(nan, dtype);

  kernels::AtpAttentionArgs args;
  args.x = good.view();
  args.rank = kernels::RankPolicy::Fixed(3);
  args.max_rank = max_rank_;
  args.output_dtype = dtype;
  absl::StatusOr<kernels::AtpAttentionResult> want =
      backend_->AtpAttention(**local, args, kernels::ExecContext{});
  ASSERT_TRUE(want.ok()) << want.status();

  // One stream: a good request, three bad ones, a good one. Each bad one gets its own error; the
  // good ones beside them are answered as usual.
  const client::RankPolicy r3 = client::RankPolicy::Fixed(3);
  std::vector<client::AtpAttentionRequest> batch = {
      {.layer_id = id, .x = ClientView(good), .rank = r3},
      {.layer_id = id, .x = ClientView(wrong_width), .rank = r3},
      {.layer_id = "it.no.such.layer", .x = ClientView(good), .rank = r3},
      {.layer_id = id, .x = ClientView(with_nan), .rank = r3},
      {.layer_id = id, .x = ClientView(good), .rank = r3},
  };
  std::vector<absl::StatusOr<client::AttentionResult>> got = client_->AtpAttentionBatch(batch);
  ASSERT_EQ(got.size(), batch.size());
  ASSERT_TRUE(got[0].ok()) << got[0].status();
  ExpectSameBits(got[0]->y, want->y, "first good request");
  EXPECT_EQ(got[1].status().code(), absl::StatusCode::kInvalidArgument) << got[1].status();
  EXPECT_THAT(got[1].status().message(), HasSubstr("[5,15]"));
  EXPECT_EQ(got[2].status().code(), absl::StatusCode::kNotFound) << got[2].status();
  EXPECT_THAT(got[2].status().message(), HasSubstr("it.no.such.layer"));
  EXPECT_EQ(got[3].status().code(), absl::StatusCode::kInvalidArgument) << got[3].status();
  EXPECT_THAT(got[3].status().message(), HasSubstr("non-finite"));
  ASSERT_TRUE(got[4].ok()) << got[4].status();
  ExpectSameBits(got[4]->y, want->y, "good request after the bad ones");

  // Still ready, and still right.
  absl::StatusOr<client::Readiness> ready = client_->CheckHealth();
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(*ready, client::Readiness::kServing);
  absl::StatusOr<client::AttentionResult> after = client_->AtpAttention(batch[0]);
  ASSERT_TRUE(after.ok()) << after.status();
  ExpectSameBits(after->y, want->y, "request after the refusals");
  ASSERT_TRUE(client_->RemoveLayer(id).ok());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, WorkerCudaTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(kernels::DTypeName(info.param));
                         });

}  // namespace
}  // namespace atp::testing
