// Unit tests of the worker's parts that need no gRPC server: flags, executor, layer registry,
// token check, log lines, the metrics HTTP endpoint and header conversion.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "atp/service/worker_flags.h"
#include "compute_plan.h"
#include "convert.h"
#include "executor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "layer_registry.h"
#include "log.h"
#include "metrics_http.h"
#include "payload_pool.h"
#include "token_check.h"

namespace atp::service {
namespace {

using ::testing::HasSubstr;

std::string TempFile(const std::string& name, const std::string& content) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", name);
  std::ofstream(path) << content;
  return path;
}

absl::StatusOr<WorkerFlags> Parse(std::vector<std::string> args) {
  std::vector<const char*> argv = {"atp-worker"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return ParseWorkerFlags(static_cast<int>(argv.size()), argv.data());
}

TEST(WorkerFlagsTest, ParsesEveryFlagByItsDashedName) {
  auto f = Parse({"--listen=127.0.0.1:7000",
                  "--health-listen",
                  "0.0.0.0:7001",
                  "--metrics-listen=",
                  "--backend=cpu",
                  "--device=1",
                  "--threads=3",
                  "--max-tensor-bytes=2GiB",
                  "--max-sequence-length=4096",
                  "--max-rank=64",
                  "--max-inflight-requests=10",
                  "--max-inflight-per-stream=2",
                  "--max-queue-depth=5",
                  "--max-inflight-bytes=1GB",
                  "--max-resident-layer-bytes=512MiB",
                  "--chunk-bytes=256KiB",
                  "--tls-cert=c.pem",
                  "--tls-key=k.pem",
                  "--tls-client-ca=ca.pem",
                  "--token-file=t",
                  "--drain-timeout=1m30s",
                  "--log-format=json",
                  "--log-level=debug"});
  ASSERT_TRUE(f.ok()) << f.status();
  const WorkerOptions& o = f->options;
  EXPECT_EQ(o.listen, "127.0.0.1:7000");
  EXPECT_EQ(o.health_listen, "0.0.0.0:7001");
  EXPECT_EQ(o.metrics_listen, "");
  EXPECT_EQ(o.backend, "cpu");
  EXPECT_EQ(o.device, 1);
  EXPECT_EQ(o.threads, 3);
  EXPECT_EQ(o.max_tensor_bytes, uint64_t{2} << 30);
  EXPECT_EQ(o.max_sequence_length, 4096);
  EXPECT_EQ(o.max_rank, 64);
  EXPECT_EQ(o.max_inflight_requests, 10);
  EXPECT_EQ(o.max_inflight_per_stream, 2);
  EXPECT_EQ(o.max_queue_depth, 5);
  EXPECT_EQ(o.max_inflight_bytes, 1000000000u);
  EXPECT_EQ(o.max_resident_layer_bytes, uint64_t{512} << 20);
  EXPECT_EQ(o.chunk_bytes, 256u * 1024);
  EXPECT_EQ(o.tls_cert, "c.pem");
  EXPECT_EQ(o.tls_key, "k.pem");
  EXPECT_EQ(o.tls_client_ca, "ca.pem");
  EXPECT_EQ(o.token_file, "t");
  EXPECT_EQ(o.drain_timeout, absl::Seconds(90));
  EXPECT_EQ(o.log_format, LogFormat::kJson);
  EXPECT_EQ(o.log_level, LogLevel::kDebug);
}

TEST(WorkerFlagsTest, DefaultsMatchTheDocumentedOnes) {
  auto f = Parse({});
  ASSERT_TRUE(f.ok());
  const WorkerOptions& o = f->options;
  EXPECT_EQ(o.listen, "0.0.0.0:50051");
  EXPECT_EQ(o.health_listen, "");
  EXPECT_EQ(o.metrics_listen, "0.0.0.0:9090");
  EXPECT_EQ(o.backend, "auto");
  EXPECT_EQ(o.max_tensor_bytes, uint64_t{1} << 30);
  EXPECT_EQ(o.max_sequence_length, 131072);
  EXPECT_EQ(o.max_rank, 4096);
  EXPECT_EQ(o.max_inflight_requests, 64);
  EXPECT_EQ(o.max_inflight_per_stream, 8);
  EXPECT_EQ(o.max_queue_depth, 32);
  EXPECT_EQ(o.max_inflight_bytes, uint64_t{4} << 30);
  EXPECT_EQ(o.max_resident_layer_bytes, 0u);
  EXPECT_EQ(o.chunk_bytes, 1u << 20);
  EXPECT_EQ(o.drain_timeout, absl::Seconds(30));
  EXPECT_EQ(o.log_format, LogFormat::kText);
}

TEST(WorkerFlagsTest, FlagfileIsAConfigFileWithComments) {
  const std::string path = TempFile("worker.flags",
                                    "# a worker\n"
                                    "--listen=127.0.0.1:9\n"
                                    "\n"
                                    "  --max-rank=7   \n"
                                    "--drain-timeout=5\n");
  auto f = Parse({"--flagfile=" + path, "--max-rank=8"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->options.listen, "127.0.0.1:9");
  EXPECT_EQ(f->options.max_rank, 8);  // later flags win
  EXPECT_EQ(f->options.drain_timeout, absl::Seconds(5));
  auto bad = Parse({"--flagfile=" + TempFile("bad.flags", "listen=x\n")});
  EXPECT_THAT(bad.status().message(), HasSubstr("line 1: \"listen=x\" is not a --flag"));
  auto missing = Parse({"--flagfile=/nonexistent/flags"});
  EXPECT_THAT(missing.status().message(), HasSubstr("cannot be read"));
}

TEST(WorkerFlagsTest, BadFlagsGetOneClearLine) {
  EXPECT_THAT(Parse({"--bogus=1"}).status().message(), HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(Parse({"--backend=tpu"}).status().message(),
              HasSubstr("--backend=tpu is not valid, want auto, cpu or cuda"));
  EXPECT_THAT(Parse({"--max-rank=0"}).status().message(), HasSubstr("--max-rank=0"));
  EXPECT_THAT(Parse({"--chunk-bytes=10"}).status().message(), HasSubstr("from 1024"));
  EXPECT_THAT(Parse({"--max-tensor-bytes=lots"}).status().message(),
              HasSubstr("--max-tensor-bytes=lots"));
  EXPECT_THAT(Parse({"--drain-timeout=soon"}).status().message(), HasSubstr("duration"));
  EXPECT_THAT(Parse({"--listen"}).status().message(), HasSubstr("--listen needs a value"));
  EXPECT_THAT(Parse({"extra"}).status().message(), HasSubstr("unexpected argument"));
  // Underscores are accepted for dashes.
  auto underscored = Parse({"--max_queue_depth=3"});
  ASSERT_TRUE(underscored.ok());
  EXPECT_EQ(underscored->options.max_queue_depth, 3);
}

TEST(WorkerFlagsTest, HelpDocumentsEveryFlag) {
  auto f = Parse({"--help"});
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->help);
  const std::string usage = WorkerUsage("atp-worker");
  for (const char* name : {"listen",
                           "health-listen",
                           "metrics-listen",
                           "backend",
                           "device",
                           "threads",
                           "max-tensor-bytes",
                           "max-sequence-length",
                           "max-rank",
                           "max-inflight-requests",
                           "max-inflight-per-stream",
                           "max-queue-depth",
                           "max-inflight-bytes",
                           "max-resident-layer-bytes",
                           "chunk-bytes",
                           "tls-cert",
                           "tls-key",
                           "tls-client-ca",
                           "token-file",
                           "drain-timeout",
                           "log-format",
                           "flagfile"}) {
    EXPECT_THAT(usage, HasSubstr(absl::StrCat("--", name, "="))) << name;
  }
  EXPECT_THAT(usage, HasSubstr("(default: 0.0.0.0:50051)"));
  EXPECT_THAT(usage, HasSubstr("(default: 1GiB)"));
}

TEST(WorkerFlagsTest, ByteSizesTakeBinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576u);
  EXPECT_EQ(*ParseByteSize("1MiB"), 1048576u);
  EXPECT_EQ(*ParseByteSize("4gib"), uint64_t{4} << 30);
  EXPECT_EQ(*ParseByteSize("1GB"), 1000000000u);
  EXPECT_EQ(*ParseByteSize("512K"), 512u * 1024);
  EXPECT_FALSE(ParseByteSize("1.5GiB").ok());
  EXPECT_FALSE(ParseByteSize("GiB").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999").ok());
  EXPECT_FALSE(ParseByteSize("20000000000TiB").ok());
}

TEST(ExecutorTest, RunsTasksInOrderAndRefusesBeyondTheQueueDepth) {
  Executor executor(kernels::CreateCpuBackend(), /*max_queue_depth=*/2);
  std::vector<int> depths;
  executor.set_depth_observer([&](int d) { depths.push_back(d); });
  absl::Notification release;
  absl::Notification running;
  std::vector<int> order;
  ASSERT_TRUE(executor
                  .Submit([&](kernels::Backend& b) {
                    EXPECT_EQ(b.name(), "cpu");
                    running.Notify();
                    release.WaitForNotification();
                    order.push_back(0);
                  })
                  .ok());
  running.WaitForNotification();  // the first task left the queue
  ASSERT_TRUE(executor.Submit([&](kernels::Backend&) { order.push_back(1); }).ok());
  ASSERT_TRUE(executor.Submit([&](kernels::Backend&) { order.push_back(2); }).ok());
  EXPECT_EQ(executor.queue_depth(), 2);
  absl::Status full = executor.Submit([&](kernels::Backend&) { order.push_back(3); });
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("queue is full (2 requests"));
  release.Notify();
  executor.Shutdown();  // runs what is queued
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(executor.queue_depth(), 0);
  EXPECT_EQ(depths.back(), 0);
  EXPECT_EQ(executor.Submit([](kernels::Backend&) {}).code(), absl::StatusCode::kUnavailable);
}

std::unique_ptr<LayerEntry> Entry(kernels::Backend& backend, const std::string& id,
                                  const std::string& digest, uint64_t bytes) {
  kernels::LayerSpec spec;
  spec.kind = kernels::LayerSpec::Kind::kLinear;
  spec.weights.emplace("weight", kernels::Tensor::FromF32({1, 1}, {1.0f}));
  auto handle = backend.LoadLayer(std::move(spec));
  EXPECT_TRUE(handle.ok());
  auto e = std::make_unique<LayerEntry>();
  e->id = id;
  e->digest = digest;
  e->resident_bytes = bytes;
  e->handle = *std::move(handle);
  return e;
}

TEST(PayloadPoolTest, ReusesReleasedBuffersUpToItsCap) {
  PayloadPool pool(/*max_cached_bytes=*/8 << 20);
  uint8_t* first;
  {
    PooledBuffer a = pool.Acquire(3 << 20);  // size class 4 MiB
    ASSERT_NE(a.data(), nullptr);
    EXPECT_EQ(a.size(), size_t{3} << 20);
    a.data()[0] = 1;
    a.data()[a.size() - 1] = 2;
    first = a.data();
  }
  EXPECT_EQ(pool.cached_bytes(), uint64_t{4} << 20);
  PooledBuffer b = pool.Acquire(4 << 20);
  EXPECT_EQ(b.data(), first);  // the same memory again
  EXPECT_EQ(pool.cached_bytes(), 0u);
  {
    PooledBuffer c = pool.Acquire(16 << 20);  // larger than the cap: not kept
    PooledBuffer small = pool.Acquire(100);   // small buffers come from the heap
    small.data()[99] = 7;
  }
  EXPECT_EQ(pool.cached_bytes(), 0u);
  PooledBuffer moved = std::move(b);
  EXPECT_EQ(moved.data(), first);
}

TEST(LayerRegistryTest, AccountsMemoryAndResolvesConflictsByDigest) {
  auto backend = kernels::CreateCpuBackend();
  LayerRegistry registry(1000);
  size_t observed_layers = 0;
  registry.set_observer([&](size_t n, uint64_t) { observed_layers = n; });
  auto r1 = registry.Reserve(600, "a");
  ASSERT_TRUE(r1.ok());
  auto r2 = registry.Reserve(600, "b");
  EXPECT_EQ(r2.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r2.status().message(), HasSubstr("layer \"b\" needs 600 bytes"));
  auto a = registry.Insert(Entry(*backend, "a", "d1", 600), false, *std::move(r1));
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->already_registered);
  EXPECT_EQ(registry.resident_bytes(), 600u);
  EXPECT_EQ(observed_layers, 1u);

  auto same = registry.Insert(Entry(*backend, "a", "d1", 600), false, {});
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->already_registered);
  EXPECT_EQ(registry.resident_bytes(), 600u);
  auto other = registry.Insert(Entry(*backend, "a", "d2", 100), false, {});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  auto replaced = registry.Insert(Entry(*backend, "a", "d2", 100), true, {});
  ASSERT_TRUE(replaced.ok());
  EXPECT_EQ(registry.resident_bytes(), 100u);

  {
    auto dropped = registry.Reserve(900, "c");  // released when it goes out of scope
    ASSERT_TRUE(dropped.ok());
  }
  EXPECT_TRUE(registry.Reserve(900, "c").ok());

  std::shared_ptr<const LayerEntry> held = registry.Find("a");
  auto freed = registry.Remove("a");
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(*freed, 100u);
  EXPECT_EQ(held->digest, "d2");  // a request holding the layer keeps it alive
  EXPECT_EQ(registry.Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.Remove("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(observed_layers, 0u);
}

TEST(LayerRegistryTest, ValidatesIdsAndTensorListsBeforeAnyPayload) {
  EXPECT_TRUE(ValidateLayerId("model/layer.3:q-proj_a").ok());
  EXPECT_FALSE(ValidateLayerId("").ok());
  EXPECT_FALSE(ValidateLayerId(std::string(129, 'a')).ok());
  EXPECT_THAT(ValidateLayerId("a b").message(), HasSubstr("0x20"));

  kernels::LayerSpec linear;
  linear.kind = kernels::LayerSpec::Kind::kLinear;
  auto t = [](std::string name, std::vector<int64_t> shape) {
    wire::TensorLayout l;
    l.name = std::move(name);
    l.shape = std::move(shape);
    return l;
  };
  EXPECT_TRUE(ValidateLayerTensors(linear, {t("weight", {4, 3}), t("bias", {4})}).ok());
  EXPECT_THAT(ValidateLayerTensors(linear, {t("weight", {4, 3}), t("bias", {3})}).message(),
              HasSubstr("bias has shape [3], want [4]"));
  EXPECT_THAT(ValidateLayerTensors(linear, {t("bias", {4})}).message(),
              HasSubstr("no tensor \"weight\""));
  EXPECT_THAT(ValidateLayerTensors(linear, {t("weight", {4, 3}), t("weight", {4, 3})}).message(),
              HasSubstr("appears twice"));
  EXPECT_THAT(ValidateLayerTensors(linear, {t("weight", {4, 3}), t("gamma", {4})}).message(),
              HasSubstr("unknown tensor \"gamma\""));
}

TEST(TokenCheckTest, AcceptsOnlyTheRightBearerToken) {
  auto check = TokenCheck::FromFile(TempFile("token", "  s3cret-token\n"));
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_TRUE(check->Check("Bearer s3cret-token").ok());
  EXPECT_TRUE(check->Check("bearer s3cret-token").ok());
  EXPECT_THAT(check->Check(std::nullopt).message(), HasSubstr("missing"));
  EXPECT_THAT(check->Check("Basic s3cret-token").message(), HasSubstr("not of the form"));
  absl::Status wrong = check->Check("Bearer s3cret-tokeN");
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(wrong.message(), ::testing::Not(HasSubstr("s3cret")));
  EXPECT_EQ(check->Check("Bearer s3cret-token-longer").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(TokenCheck::FromFile(TempFile("empty-token", "\n")).ok());
  EXPECT_FALSE(TokenCheck::FromToken("two words").ok());
  EXPECT_EQ(TokenCheck::FromFile("/nonexistent/token").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(LogTest, TextLinesQuoteWhatNeedsItAndJsonLinesEscape) {
  const std::string text =
      FormatLogLine(LogFormat::kText, LogLevel::kInfo, "worker started",
                    {{"port", 50051}, {"device", "CPU x2"}, {"ok", true}, {"path", "a=b"}});
  EXPECT_THAT(text, ::testing::StartsWith("ts="));
  EXPECT_THAT(text, HasSubstr(" level=info msg=\"worker started\" port=50051 device=\"CPU x2\" "
                              "ok=true path=\"a=b\""));
  const std::string json = FormatLogLine(LogFormat::kJson, LogLevel::kError, "bad \"x\"\n",
                                         {{"port", 1}, {"error", "tab\there"}});
  EXPECT_THAT(json, HasSubstr("\"level\":\"error\",\"msg\":\"bad \\\"x\\\"\\n\",\"port\":1,"
                              "\"error\":\"tab\\there\"}"));
}

std::string Get(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return "";
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, n);
  ::close(fd);
  return out;
}

TEST(MetricsHttpTest, ServesMetricsAndRefusesOtherPaths) {
  auto server = MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string("m 1\n"); });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  const std::string ok = Get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(ok, ::testing::StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(ok, HasSubstr("Content-Length: 4\r\n"));
  EXPECT_THAT(ok, ::testing::EndsWith("\r\n\r\nm 1\n"));
  EXPECT_THAT(Get(port, "HEAD /metrics HTTP/1.0\r\n\r\n"), ::testing::EndsWith("\r\n\r\n"));
  EXPECT_THAT(Get(port, "GET / HTTP/1.1\r\n\r\n"), HasSubstr("404 Not Found"));
  EXPECT_THAT(Get(port, "POST /metrics HTTP/1.1\r\n\r\n"), HasSubstr("405"));
  EXPECT_THAT(Get(port, "garbage\r\n\r\n"), HasSubstr("400 Bad Request"));
  // The port is taken now: a second server on it fails with a clear message.
  auto clash = MetricsHttpServer::Start(absl::StrCat("127.0.0.1:", port), [] { return ""; });
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(MetricsHttpServer::Start("no-port", [] { return ""; }).ok());
}

TEST(SplitHostPortTest, HandlesNamesIpv4AndIpv6) {
  EXPECT_EQ(*SplitHostPort("0.0.0.0:9090"), std::make_pair(std::string("0.0.0.0"), 9090));
  EXPECT_EQ(*SplitHostPort("[::]:80"), std::make_pair(std::string("::"), 80));
  EXPECT_EQ(*SplitHostPort(":0"), std::make_pair(std::string(""), 0));
  EXPECT_FALSE(SplitHostPort("host:99999").ok());
}

TEST(ConvertTest, RequestHeadersBecomePlansOrSpecificErrors) {
  WorkerLimits limits;
  limits.max_tensor_bytes = 1 << 20;
  limits.max_sequence_length = 100;
  limits.max_rank = 8;
  limits.chunk_bytes = 4096;
  atp::v1::RequestHeader h;
  h.set_request_id(9);
  h.mutable_lowrank_linear()->set_layer_id("lin");
  h.mutable_lowrank_linear()->set_output_form(atp::v1::OUTPUT_FORM_FACTORED);
  h.mutable_lowrank_linear()->mutable_rank()->set_energy(0.9);
  auto* x = h.mutable_input()->mutable_dense();
  x->set_dtype(atp::v1::DTYPE_BF16);
  x->add_shape(10);
  x->add_shape(6);
  x->set_byte_size(120);
  h.set_response_chunk_bytes(1 << 30);
  auto plan = ToComputePlan(h, limits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->request_id, 9u);
  EXPECT_EQ(plan->op, Op::kLowRankLinear);
  EXPECT_TRUE(plan->factored_output);
  ASSERT_TRUE(plan->rank.has_value());
  EXPECT_EQ(plan->rank->kind, kernels::RankPolicy::Kind::kEnergy);
  EXPECT_EQ(plan->response_chunk_bytes, 4096u);  // capped at the limit
  EXPECT_FALSE(plan->output_dtype.has_value());

  auto no_layer = h;
  no_layer.mutable_lowrank_linear()->clear_layer_id();
  EXPECT_THAT(ToComputePlan(no_layer, limits).status().message(),
              HasSubstr("lowrank_linear sets no layer_id"));
  auto max_only = h;
  max_only.mutable_lowrank_linear()->mutable_rank()->Clear();
  max_only.mutable_lowrank_linear()->mutable_rank()->set_max_rank(3);
  EXPECT_THAT(ToComputePlan(max_only, limits).status().message(), HasSubstr("no policy"));
  auto bad_dtype = h;
  bad_dtype.set_output_dtype(static_cast<atp::v1::DType>(42));
  EXPECT_THAT(ToComputePlan(bad_dtype, limits).status().message(), HasSubstr("output_dtype is 42"));
  auto no_input = h;
  no_input.clear_input();
  EXPECT_THAT(ToComputePlan(no_input, limits).status().message(), HasSubstr("sets no input"));
}

TEST(ConvertTest, LayerHeadersBecomePlansWithTheirDigestConfiguration) {
  WorkerLimits limits;
  limits.max_tensor_bytes = 1 << 20;
  atp::v1::LayerHeader h;
  h.set_layer_id("attn");
  auto* a = h.mutable_attention();
  a->set_d_model(8);
  a->set_num_heads(2);
  a->set_head_dim(4);
  a->set_key_scale(atp::v1::KEY_SCALE_INV_SQRT_LEN);
  for (const char* name : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    auto* t = h.add_tensors();
    t->set_name(absl::StrCat(name, ".weight"));
    t->set_dtype(atp::v1::DTYPE_F32);
    t->add_shape(8);
    t->add_shape(8);
    t->set_byte_size(256);
  }
  auto plan = ToLayerPlan(h, limits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->payload_bytes, 1024u);
  EXPECT_EQ(plan->digest_config,
            "attention:d_model=8;num_heads=2;num_kv_heads=2;head_dim=4;scale=0.5;key_scale=1");
  EXPECT_EQ(plan->spec.attention.key_scale, kernels::KeyScale::kInvSqrtLen);
  auto no_config = h;
  no_config.clear_attention();
  EXPECT_THAT(ToLayerPlan(no_config, limits).status().message(), HasSubstr("sets no config"));
  auto big = h;
  big.mutable_tensors(0)->set_shape(0, 1 << 16);
  big.mutable_tensors(0)->set_byte_size(uint64_t{1} << 16 << 5);
  EXPECT_EQ(ToLayerPlan(big, limits).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace atp::service
