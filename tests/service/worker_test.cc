// The worker through a real gRPC server on 127.0.0.1 with the CPU backend: results equal the
// in-process backend bit for bit, several requests per stream in order, the layer registry,
// statistics, metrics, health, reflection and concurrency.
#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "atp/kernels/backend.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "worker_harness.h"

namespace atp::service::testing {
namespace {

using kernels::DType;
using kernels::Tensor;
using ::testing::HasSubstr;

constexpr int64_t kModel = 24;
constexpr int64_t kLength = 37;

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = TestWorker::Start();
    ASSERT_NE(worker_, nullptr);
    reference_ = kernels::CreateCpuBackend();
    attention_spec_ = RandomAttentionLayer(kModel, 4, 2, 6, /*bias=*/true, 100);
    linear_spec_ = RandomLinearLayer(17, kModel, /*bias=*/true, 200);
    ASSERT_TRUE(RegisterLayer(stub(), "attn", attention_spec_).ok());
    ASSERT_TRUE(RegisterLayer(stub(), "lin", linear_spec_).ok());
    auto a = reference_->LoadLayer(CloneSpec(attention_spec_));
    auto l = reference_->LoadLayer(CloneSpec(linear_spec_));
    ASSERT_TRUE(a.ok() && l.ok());
    attention_ = *std::move(a);
    linear_ = *std::move(l);
  }

  void TearDown() override {
    attention_.reset();
    linear_.reset();
  }

  atp::v1::Worker::Stub& stub() { return worker_->stub(); }

  // The outputs the in-process backend computes for the request `header` on `inputs`.
  std::vector<Tensor> Reference(const atp::v1::RequestHeader& header,
                                const std::vector<const Tensor*>& inputs) {
    std::vector<Tensor> out;
    const int64_t max_rank = 4096;  // the worker's default limit, passed to every op
    kernels::ExecContext ctx;
    if (header.has_atp_attention()) {
      kernels::AtpAttentionArgs args;
      args.x = inputs[0]->view();
      if (header.atp_attention().has_rank()) {
        args.rank = kernels::RankPolicy::Fixed(header.atp_attention().rank().fixed());
      }
      args.max_rank = max_rank;
      args.output_dtype = inputs[0]->dtype();
      auto r = reference_->AtpAttention(*attention_, args, ctx);
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) out.push_back(std::move(r->y));
    } else if (header.has_exact_attention()) {
      kernels::ExactAttentionArgs args;
      args.x = inputs[0]->view();
      args.causal = header.exact_attention().causal();
      args.output_dtype = inputs[0]->dtype();
      auto r = reference_->ExactAttention(*attention_, args, ctx);
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) out.push_back(*std::move(r));
    } else if (header.has_decompose()) {
      kernels::PrincipalBasesArgs args;
      args.x = inputs[0]->view();
      args.rank = kernels::RankPolicy::Fixed(header.decompose().rank().fixed());
      args.max_rank = max_rank;
      args.output_dtype = inputs[0]->dtype();
      auto r = reference_->Decompose(args, ctx);
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) {
        out.push_back(std::move(r->u));
        out.push_back(std::move(r->s));
        out.push_back(std::move(r->vt));
      }
    } else if (header.has_lowrank_linear()) {
      const auto& op = header.lowrank_linear();
      kernels::LowRankLinearArgs args;
      args.weight = op.weight();
      args.factored_input = header.input().has_factored();
      if (args.factored_input) {
        args.u = inputs[0]->view();
        args.c = inputs[1]->view();
      } else {
        args.x = inputs[0]->view();
        args.rank = kernels::RankPolicy::Fixed(op.rank().fixed());
      }
      args.max_rank = max_rank;
      args.factored_output = op.output_form() == atp::v1::OUTPUT_FORM_FACTORED;
      args.output_dtype = inputs[0]->dtype();
      const kernels::LayerHandle& layer = op.layer_id() == "lin" ? *linear_ : *attention_;
      auto r = reference_->LowRankLinear(layer, args, ctx);
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) {
        if (r->factored) {
          out.push_back(std::move(r->u));
          out.push_back(std::move(r->c));
        } else {
          out.push_back(std::move(r->y));
        }
      }
    }
    return out;
  }

  void ExpectSameAsReference(const atp::v1::RequestHeader& header,
                             const std::vector<const Tensor*>& inputs, const Response& got) {
    ASSERT_TRUE(got.status.ok()) << got.status;
    std::vector<Tensor> want = Reference(header, inputs);
    ASSERT_EQ(got.outputs.size(), want.size()) << header.DebugString();
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_TRUE(SameBits(got.outputs[i], want[i]))
          << "output " << i << " (" << got.header.outputs(i).name() << ") of "
          << header.ShortDebugString();
    }
  }

  std::unique_ptr<TestWorker> worker_;
  std::unique_ptr<kernels::Backend> reference_;
  kernels::LayerSpec attention_spec_;
  kernels::LayerSpec linear_spec_;
  std::unique_ptr<kernels::LayerHandle> attention_;
  std::unique_ptr<kernels::LayerHandle> linear_;
};

TEST_F(WorkerTest, ServerInfoAdvertisesBackendLimitsAndOperations) {
  grpc::ClientContext context;
  Prepare(&context);
  atp::v1::ServerInfo info;
  ASSERT_TRUE(stub().GetServerInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_FALSE(info.version().empty());
  EXPECT_EQ(info.limits().chunk_bytes(), 1u << 20);
  EXPECT_EQ(info.limits().max_rank(), 4096u);
  EXPECT_EQ(info.limits().max_sequence_length(), 131072u);
  EXPECT_EQ(info.limits().max_inflight_per_stream(), 8u);
  EXPECT_GT(info.limits().max_resident_layer_bytes(), 0u);
  EXPECT_EQ(info.limits().max_queue_depth(), 32u);
  EXPECT_EQ(info.limits().max_inflight_bytes(), uint64_t{4} << 30);
  EXPECT_THAT(info.operations(), ::testing::UnorderedElementsAre("atp_attention", "exact_attention",
                                                                 "lowrank_linear", "decompose"));
  EXPECT_FALSE(info.requires_token());
}

TEST_F(WorkerTest, EveryOperationEqualsTheInProcessBackendBitForBit) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(kernels::DTypeName(dtype));
    const Tensor x = RandomTensor(dtype, {kLength, kModel}, 7);
    const Tensor u = RandomTensor(dtype, {kLength, 4}, 8);
    const Tensor c = RandomTensor(dtype, {4, kModel}, 9);
    const std::vector<std::pair<atp::v1::RequestHeader, std::vector<const Tensor*>>> cases = {
        {AtpAttentionRequest(1, "attn", x, 5), {&x}},
        {AtpAttentionRequest(2, "attn", x), {&x}},
        {ExactAttentionRequest(3, "attn", x, false), {&x}},
        {ExactAttentionRequest(4, "attn", x, true), {&x}},
        {DecomposeRequest(5, x, 6), {&x}},
        {LowRankDenseRequest(6, "lin", "", x, 3, false), {&x}},
        {LowRankDenseRequest(7, "lin", "", x, 3, true), {&x}},
        {LowRankDenseRequest(8, "attn", "q_proj", x, 2, false), {&x}},
        {LowRankFactoredRequest(9, "lin", "", u, c, false), {&u, &c}},
        {LowRankFactoredRequest(10, "lin", "", u, c, true), {&u, &c}},
    };
    for (const auto& [header, inputs] : cases) {
      auto got = RunOne(stub(), header, inputs);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->header.request_id(), header.request_id());
      ExpectSameAsReference(header, inputs, *got);
    }
  }
}

TEST_F(WorkerTest, ReportsRankEnergyAndTiming) {
  const Tensor x = RandomTensor(DType::kF32, {kLength, kModel}, 11);
  auto got = RunOne(stub(), DecomposeRequest(1, x, 6), {&x});
  ASSERT_TRUE(got.ok() && got->status.ok());
  EXPECT_EQ(got->header.rank(), 6u);
  EXPECT_GT(got->header.captured_energy(), 0.0);
  EXPECT_LE(got->header.captured_energy(), 1.0);
  ASSERT_EQ(got->header.outputs_size(), 3);
  EXPECT_EQ(got->header.outputs(0).name(), "u");
  EXPECT_EQ(got->header.outputs(1).dtype(), atp::v1::DTYPE_F32);
  EXPECT_THAT(got->header.outputs(2).shape(), ::testing::ElementsAre(6, kModel));
  EXPECT_TRUE(got->header.has_timing());
}

TEST_F(WorkerTest, SeveralRequestsOnOneStreamAreAnsweredInOrder) {
  const Tensor x = RandomTensor(DType::kF32, {kLength, kModel}, 12);
  const Tensor y = RandomTensor(DType::kF32, {5, kModel}, 13);
  std::vector<std::pair<atp::v1::RequestHeader, std::vector<const Tensor*>>> cases = {
      {ExactAttentionRequest(41, "attn", x, false), {&x}},
      {DecomposeRequest(7, y, 2), {&y}},
      {LowRankDenseRequest(99, "lin", "", x, 4, false), {&x}},
      {AtpAttentionRequest(3, "attn", y, 2), {&y}},
      {DecomposeRequest(1000, x, 3), {&x}},
  };
  ComputeSession session(stub());
  // Interleave: all headers first, then the chunks in reverse request order, in small chunks.
  for (const auto& [h, inputs] : cases) {
    atp::v1::RequestHeader small = h;
    small.set_response_chunk_bytes(1500);
    ASSERT_TRUE(session.SendHeader(small));
  }
  for (auto it = cases.rbegin(); it != cases.rend(); ++it) {
    ASSERT_TRUE(session.SendTensor(it->first.request_id(), 0, *it->second[0], 1000));
  }
  session.WritesDone();
  for (const auto& [h, inputs] : cases) {
    auto got = session.Read();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->header.request_id(), h.request_id());
    ExpectSameAsReference(h, inputs, *got);
  }
  EXPECT_TRUE(session.Finish().ok());
}

TEST_F(WorkerTest, RegistrationReportsTheDigestAndIsIdempotent) {
  const kernels::LayerSpec spec = RandomLinearLayer(9, 5, false, 300);
  auto first = RegisterLayer(stub(), "idem", spec, {.chunk_bytes = 7});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->already_registered());
  EXPECT_EQ(first->layer().digest(), LayerDigestOf(spec));
  EXPECT_EQ(first->layer().resident_bytes(), 9u * 5 * 4);
  // Again without a digest: the worker reads everything, finds the same digest.
  auto second = RegisterLayer(stub(), "idem", spec, {.send_digest = false});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->already_registered());
}

TEST_F(WorkerTest, AlreadyRegisteredIsAnsweredRightAfterTheHeader) {
  grpc::ClientContext context;
  Prepare(&context);
  atp::v1::RegisterLayerResponse response;
  auto writer = stub().RegisterLayer(&context, &response);
  atp::v1::RegisterLayerRequest header;
  *header.mutable_header() = MakeLayerHeader("lin", linear_spec_, /*with_digest=*/true);
  ASSERT_TRUE(writer->Write(header));
  writer->WritesDone();  // no payload at all
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_TRUE(response.already_registered());
  EXPECT_EQ(response.layer().layer_id(), "lin");
}

TEST_F(WorkerTest, SameIdWithOtherContentIsAlreadyExistsUnlessReplaced) {
  const kernels::LayerSpec other = RandomLinearLayer(17, kModel, true, 201);
  auto conflict = RegisterLayer(stub(), "lin", other);
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(conflict.status().message(), HasSubstr("set replace"));
  auto conflict_late = RegisterLayer(stub(), "lin", other, {.send_digest = false});
  EXPECT_EQ(conflict_late.status().code(), absl::StatusCode::kAlreadyExists);
  auto replaced = RegisterLayer(stub(), "lin", other, {.replace = true});
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(replaced->layer().digest(), LayerDigestOf(other));
}

TEST_F(WorkerTest, ListsAndRemovesLayersAndUnknownLayersAreNotFoundByName) {
  grpc::ClientContext list_context;
  Prepare(&list_context);
  atp::v1::ListLayersResponse list;
  ASSERT_TRUE(stub().ListLayers(&list_context, {}, &list).ok());
  ASSERT_EQ(list.layers_size(), 2);
  EXPECT_EQ(list.layers(0).layer_id(), "attn");
  EXPECT_TRUE(list.layers(0).has_attention());
  EXPECT_EQ(list.layers(0).attention().num_kv_heads(), 2u);
  EXPECT_EQ(list.layers(1).layer_id(), "lin");
  EXPECT_EQ(list.resident_bytes(),
            list.layers(0).resident_bytes() + list.layers(1).resident_bytes());

  grpc::ClientContext remove_context;
  Prepare(&remove_context);
  atp::v1::RemoveLayerRequest remove;
  remove.set_layer_id("lin");
  atp::v1::RemoveLayerResponse removed;
  ASSERT_TRUE(stub().RemoveLayer(&remove_context, remove, &removed).ok());
  EXPECT_EQ(removed.freed_bytes(), list.layers(1).resident_bytes());

  grpc::ClientContext again_context;
  Prepare(&again_context);
  grpc::Status again = stub().RemoveLayer(&again_context, remove, &removed);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(again.error_message(), HasSubstr("\"lin\""));

  const Tensor x = RandomTensor(DType::kF32, {kLength, kModel}, 14);
  auto got = RunOne(stub(), LowRankDenseRequest(1, "lin", "", x, 2, false), {&x});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got->status.message(), HasSubstr("layer \"lin\" is not registered"));
}

TEST_F(WorkerTest, StatisticsCountRequestsBytesAndErrorsByCode) {
  const Tensor x = RandomTensor(DType::kF32, {kLength, kModel}, 15);
  ASSERT_TRUE(RunOne(stub(), DecomposeRequest(1, x, 3), {&x}).ok());
  ASSERT_TRUE(RunOne(stub(), ExactAttentionRequest(2, "nope", x, false), {&x}).ok());
  auto stats = WaitForStatistics(stub(), [](const atp::v1::Statistics& s) {
    uint64_t requests = 0;
    for (const auto& op : s.ops()) requests += op.requests();
    return requests == 4;  // two registrations (SetUp) and two compute requests
  });
  std::map<std::string, atp::v1::OpStatistics> by_op;
  for (const auto& op : stats.ops()) by_op[op.op()] = op;
  EXPECT_EQ(by_op["decompose"].requests(), 1u);
  EXPECT_EQ(by_op["decompose"].errors(), 0u);
  EXPECT_EQ(by_op["decompose"].bytes_in(), x.byte_size());
  EXPECT_GT(by_op["decompose"].bytes_out(), 0u);
  EXPECT_GT(by_op["decompose"].compute_seconds(), 0.0);
  EXPECT_EQ(by_op["exact_attention"].errors(), 1u);
  EXPECT_EQ(by_op["register_layer"].requests(), 2u);
  EXPECT_EQ(stats.errors_by_code().at("NOT_FOUND"), 1u);
  EXPECT_EQ(stats.resident_layers(), 2u);
  EXPECT_EQ(stats.inflight_requests(), 0u);
}

TEST(WorkerMetricsTest, PrometheusEndpointIsScrapedOverHttp) {
  WorkerOptions options = LoopbackOptions();
  options.metrics_listen = "127.0.0.1:0";
  auto worker = TestWorker::Start(options);
  ASSERT_NE(worker, nullptr);
  ASSERT_GT(worker->server().metrics_port(), 0);
  const Tensor x = RandomTensor(DType::kF32, {9, 4}, 16);
  {
    auto r = RunOne(worker->stub(), DecomposeRequest(1, x, 2), {&x});
    ASSERT_TRUE(r.ok()) << r.status();
  }
  // Statistics are recorded as a call completes on the worker, which may be just after the
  // client has its answer: scrape until they are in (bounded).
  const std::vector<std::string> want = {
      "HTTP/1.1 200 OK",
      "text/plain; version=0.0.4",
      "atp_requests_total{op=\"decompose\"} 1",
      absl::StrCat("atp_received_bytes_total{op=\"decompose\"} ", x.byte_size()),
      "atp_compute_seconds_bucket{op=\"decompose\",le=\"+Inf\"} 1",
      "atp_queue_depth 0",
      "atp_inflight_requests 0",
      "atp_resident_layer_bytes 0",
      "atp_ready 1",
      "atp_rpcs_total{code=\"OK\",method=\"Compute\"} 1",
  };
  std::string page;
  const absl::Time end = absl::Now() + absl::Seconds(20);
  for (int attempt = 0; attempt < 4000; ++attempt) {
    auto got = HttpGet(worker->server().metrics_port(), "/metrics");
    ASSERT_TRUE(got.ok()) << got.status();
    page = *std::move(got);
    const bool all = std::all_of(want.begin(), want.end(), [&](const std::string& w) {
      return page.find(w) != std::string::npos;
    });
    if (all || absl::Now() > end) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  for (const std::string& w : want) {
    EXPECT_NE(page.find(w), std::string::npos) << "missing: " << w;
  }
  auto missing = HttpGet(worker->server().metrics_port(), "/nothing");
  ASSERT_TRUE(missing.ok());
  EXPECT_THAT(*missing, HasSubstr("404 Not Found"));
}

TEST(WorkerHealthTest, CheckAndWatchFollowReadinessThroughADrain) {
  WorkerOptions options = LoopbackOptions();
  options.health_listen = "127.0.0.1:0";
  auto worker = TestWorker::Start(options);
  ASSERT_NE(worker, nullptr);
  auto health = grpc::health::v1::Health::NewStub(worker->channel());
  auto check = [&](const std::string& service, grpc::Status* status) {
    grpc::ClientContext context;
    Prepare(&context);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    *status = health->Check(&context, req, &resp);
    return resp.status();
  };
  grpc::Status s;
  EXPECT_EQ(check("", &s), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check("atp.v1.Worker", &s), grpc::health::v1::HealthCheckResponse::SERVING);
  check("no.such.Service", &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  // The plaintext probe listener serves the same statuses and nothing else.
  auto probe_channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", worker->server().health_port()),
                          grpc::InsecureChannelCredentials());
  {
    auto probe = grpc::health::v1::Health::NewStub(probe_channel);
    grpc::ClientContext context;
    Prepare(&context);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("atp.v1.Worker");
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(probe->Check(&context, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    auto info = CallWithBytes(probe_channel, "/atp.v1.Worker/GetServerInfo", "", false);
    EXPECT_EQ(info.status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }

  {
    // Watch of a name the worker does not report: SERVICE_UNKNOWN, and the watch stays open.
    grpc::ClientContext context;
    Prepare(&context);
    grpc::health::v1::HealthCheckRequest unknown;
    unknown.set_service("no.such.Service");
    auto watch = health->Watch(&context, unknown);
    grpc::health::v1::HealthCheckResponse first;
    ASSERT_TRUE(watch->Read(&first));
    EXPECT_EQ(first.status(), grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN);
    context.TryCancel();
    EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }

  grpc::ClientContext watch_context;
  Prepare(&watch_context);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("atp.v1.Worker");
  auto watch = health->Watch(&watch_context, req);
  grpc::health::v1::HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  std::thread drain([&] { worker->server().Shutdown(absl::Seconds(5)); });
  std::vector<grpc::health::v1::HealthCheckResponse::ServingStatus> seen;
  for (int i = 0; i < 100 && watch->Read(&update); ++i) seen.push_back(update.status());
  grpc::Status end = watch->Finish();
  drain.join();
  EXPECT_THAT(seen, ::testing::ElementsAre(grpc::health::v1::HealthCheckResponse::NOT_SERVING));
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(WorkerReflectionTest, ListsTheWorkerAndHealthServices) {
  auto worker = TestWorker::Start();
  ASSERT_NE(worker, nullptr);
  // ServerReflectionRequest{list_services: ""} is field 7, an empty string.
  auto result = CallWithBytes(worker->channel(),
                              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                              std::string("\x3a\x00", 2), /*streaming=*/true);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.responses.size(), 1u);
  EXPECT_THAT(result.responses[0], HasSubstr("atp.v1.Worker"));
  EXPECT_THAT(result.responses[0], HasSubstr("grpc.health.v1.Health"));
}

TEST_F(WorkerTest, ManyConcurrentStreamsFromSeveralThreadsAllGetTheirOwnResults) {
  constexpr int kThreads = 6;
  constexpr int kStreamsPerThread = 2;
  constexpr int kRequestsPerStream = 4;
  std::vector<Tensor> inputs;
  std::vector<std::vector<Tensor>> want;
  for (int i = 0; i < kThreads; ++i) {
    inputs.push_back(RandomTensor(DType::kF32, {kLength - i, kModel}, 500 + i));
    want.push_back(Reference(LowRankDenseRequest(0, "lin", "", inputs[i], 3, false), {&inputs[i]}));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int s = 0; s < kStreamsPerThread; ++s) {
        ComputeSession session(stub());
        for (int r = 0; r < kRequestsPerStream; ++r) {
          if (!session.SendRequest(LowRankDenseRequest(r, "lin", "", inputs[t], 3, false),
                                   {&inputs[t]})) {
            ++failures;
          }
        }
        session.WritesDone();
        for (int r = 0; r < kRequestsPerStream; ++r) {
          auto got = session.Read();
          if (!got.ok() || !got->status.ok() || got->header.request_id() != uint64_t(r) ||
              got->outputs.size() != 1 || !SameBits(got->outputs[0], want[t][0])) {
            ++failures;
          }
        }
        if (!session.Finish().ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto stats = WaitForStatistics(
      stub(), [](const atp::v1::Statistics& s) { return s.inflight_requests() == 0; });
  EXPECT_EQ(stats.inflight_requests(), 0u);
}

}  // namespace
}  // namespace atp::service::testing
