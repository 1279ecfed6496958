// Every bad input of DESIGN.md §3 gets its specific status, in-band where it concerns one request,
// and the worker keeps serving: the next request on the same stream (or a new stream, when the
// stream itself was broken) succeeds.
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker_harness.h"

namespace atp::service::testing {
namespace {

using kernels::DType;
using kernels::Tensor;
using ::testing::HasSubstr;

constexpr int64_t kModel = 16;

WorkerOptions TightOptions() {
  WorkerOptions o = LoopbackOptions();
  o.max_tensor_bytes = 1 << 20;
  o.max_sequence_length = 512;
  o.max_rank = 16;
  o.chunk_bytes = 64 * 1024;
  o.max_inflight_per_stream = 4;
  o.max_resident_layer_bytes = 1 << 20;
  return o;
}

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = TestWorker::Start(TightOptions());
    ASSERT_NE(worker_, nullptr);
    ASSERT_TRUE(RegisterLayer(stub(), "attn", RandomAttentionLayer(kModel, 2, 1, 8, true, 1)).ok());
    ASSERT_TRUE(RegisterLayer(stub(), "lin", RandomLinearLayer(8, kModel, false, 2)).ok());
    x_ = RandomTensor(DType::kF32, {33, kModel}, 3);
  }

  atp::v1::Worker::Stub& stub() { return worker_->stub(); }

  // A good request on `session` is answered correctly after whatever went before.
  void ExpectServesNext(ComputeSession& session, uint64_t id = 777) {
    ASSERT_TRUE(session.SendRequest(DecomposeRequest(id, x_, 2), {&x_}));
    auto got = session.Read();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->header.request_id(), id);
    EXPECT_TRUE(got->status.ok()) << got->status;
    EXPECT_EQ(got->outputs.size(), 3u);
  }

  // The worker still answers on a fresh stream and is ready.
  void ExpectWorkerServes() {
    auto got = RunOne(stub(), DecomposeRequest(1, x_, 2), {&x_});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(got->status.ok()) << got->status;
    grpc::ClientContext context;
    Prepare(&context);
    atp::v1::ServerInfo info;
    EXPECT_TRUE(stub().GetServerInfo(&context, {}, &info).ok());
  }

  // Sends `header` and `inputs` on `session`, reads one response, returns its in-band status.
  absl::Status Refused(ComputeSession& session, const atp::v1::RequestHeader& header,
                       const std::vector<const Tensor*>& inputs) {
    EXPECT_TRUE(session.SendRequest(header, inputs, 8192));
    auto got = session.Read();
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) return got.status();
    EXPECT_EQ(got->header.request_id(), header.request_id());
    return got->status;
  }

  std::unique_ptr<TestWorker> worker_;
  Tensor x_;
};

TEST_F(BadInputTest, WrongShapeIsInvalidArgumentNamingTheShape) {
  ComputeSession session(stub());
  const Tensor wide = RandomTensor(DType::kF32, {33, kModel + 1}, 4);
  absl::Status s = Refused(session, AtpAttentionRequest(1, "attn", wide, 2), {&wide});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("x has shape [33,17], want [L,16]"));
  const Tensor flat = RandomTensor(DType::kF32, {33 * kModel}, 5);
  s = Refused(session, DecomposeRequest(2, flat, 2), {&flat});
  EXPECT_THAT(s.message(), HasSubstr("want 2 dimensions"));
  const Tensor u = RandomTensor(DType::kF32, {33, 3}, 6);
  const Tensor c = RandomTensor(DType::kF32, {4, kModel}, 7);
  s = Refused(session, LowRankFactoredRequest(3, "lin", "", u, c, false), {&u, &c});
  EXPECT_THAT(s.message(), HasSubstr("c has shape [4,16], want [3,16]"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, WrongDtypeAndByteSizeAreInvalidArgument) {
  ComputeSession session(stub());
  auto header = DecomposeRequest(1, x_, 2);
  header.mutable_input()->mutable_dense()->set_dtype(static_cast<atp::v1::DType>(9));
  absl::Status s = Refused(session, header, {&x_});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("x has dtype 9, want DTYPE_F32"));
  header = DecomposeRequest(2, x_, 2);
  header.mutable_input()->mutable_dense()->set_byte_size(x_.byte_size() - 4);
  s = Refused(session, header, {&x_});
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("want ", x_.byte_size())));
  // u and c of different dtypes.
  const Tensor u = RandomTensor(DType::kF32, {33, 3}, 6);
  const Tensor c = RandomTensor(DType::kBF16, {3, kModel}, 7);
  s = Refused(session, LowRankFactoredRequest(3, "lin", "", u, c, false), {&u, &c});
  EXPECT_THAT(s.message(), HasSubstr("u has dtype f32 and c has dtype bf16"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, ChecksumMismatchAndACorruptedChunkAreInvalidArgument) {
  ComputeSession session(stub());
  auto header = DecomposeRequest(1, x_, 2);
  header.mutable_input()->mutable_dense()->set_crc32c(header.input().dense().crc32c() ^ 1);
  absl::Status s = Refused(session, header, {&x_});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("x has CRC-32C"));

  Tensor corrupt = x_.Clone();
  static_cast<uint8_t*>(corrupt.data())[100] ^= 0x40;
  ASSERT_TRUE(session.SendHeader(DecomposeRequest(2, x_, 2)));  // header of the clean payload
  ASSERT_TRUE(session.SendTensor(2, 0, corrupt, 512));
  auto got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got->status.message(), HasSubstr("CRC-32C"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, OutOfOrderWrongTensorAndOverlongChunksAreInvalidArgument) {
  ComputeSession session(stub());
  const std::string bytes(static_cast<const char*>(x_.data()), x_.byte_size());
  ASSERT_TRUE(session.SendHeader(DecomposeRequest(1, x_, 2)));
  ASSERT_TRUE(session.SendChunk(1, 0, 1024, absl::string_view(bytes).substr(1024, 512)));
  ASSERT_TRUE(session.SendChunk(1, 0, 0, absl::string_view(bytes).substr(0, 1024)));  // dropped
  auto got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got->status.message(), HasSubstr("offset 1024, want 0"));

  const Tensor u = RandomTensor(DType::kF32, {33, 3}, 6);
  const Tensor c = RandomTensor(DType::kF32, {3, kModel}, 7);
  ASSERT_TRUE(session.SendHeader(LowRankFactoredRequest(2, "lin", "", u, c, false)));
  ASSERT_TRUE(session.SendTensor(2, 1, c));  // c before u
  got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_THAT(got->status.message(), HasSubstr("chunk for tensor 1 arrived while tensor 0 (u)"));

  ASSERT_TRUE(session.SendHeader(DecomposeRequest(3, x_, 2)));
  ASSERT_TRUE(session.SendChunk(3, 0, 0, bytes + "extra"));
  got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_THAT(got->status.message(), HasSubstr("past the end"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, TruncatedInputIsInvalidArgumentWhenTheClientHalfCloses) {
  ComputeSession session(stub());
  const std::string bytes(static_cast<const char*>(x_.data()), x_.byte_size());
  ASSERT_TRUE(session.SendHeader(DecomposeRequest(1, x_, 2)));
  ASSERT_TRUE(session.SendChunk(1, 0, 0, absl::string_view(bytes).substr(0, 1000)));
  session.WritesDone();
  auto got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got->status.message(),
              HasSubstr(absl::StrCat("x ended after 1000 of ", x_.byte_size(), " bytes")));
  EXPECT_TRUE(session.Finish().ok());
  ExpectWorkerServes();
}

TEST_F(BadInputTest, OversizeHeadersAreRefusedBeforeAnyPayload) {
  ComputeSession session(stub());
  // 64 MiB announced, nothing sent: the answer comes from the header alone.
  auto big = DecomposeRequest(1, x_, 2);
  auto* h = big.mutable_input()->mutable_dense();
  h->set_shape(0, 1 << 20);
  h->set_byte_size(uint64_t{1} << 20 << 4 << 2);
  ASSERT_TRUE(session.SendHeader(big));
  auto got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(got->status.message(), HasSubstr("limit of 1048576 bytes per tensor"));
  // Within the byte limit but beyond max_sequence_length.
  const Tensor longer = RandomTensor(DType::kF32, {600, 4}, 8);
  absl::Status s = Refused(session, DecomposeRequest(2, longer, 2), {&longer});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("L = 600 tokens, more than the limit of 512"));
  // A factored input of rank beyond max_rank.
  const Tensor u = RandomTensor(DType::kF32, {33, 17}, 9);
  const Tensor c = RandomTensor(DType::kF32, {17, kModel}, 10);
  s = Refused(session, LowRankFactoredRequest(3, "lin", "", u, c, false), {&u, &c});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("r = 17, more than the limit of 16"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, ChunksBeyondTheChunkLimitAreRefused) {
  const Tensor big = RandomTensor(DType::kF32, {512, 128}, 11);  // 256 KiB
  {
    // Larger than chunk_bytes but within the transport's message limit: in-band.
    ComputeSession session(stub());
    absl::Status s = [&] {
      EXPECT_TRUE(session.SendHeader(DecomposeRequest(1, big, 2)));
      EXPECT_TRUE(session.SendTensor(1, 0, big, 96 * 1024));
      auto got = session.Read();
      return got.ok() ? got->status : got.status();
    }();
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(s.message(), HasSubstr("more than the chunk limit of 65536 bytes"));
    ExpectServesNext(session);
  }
  {
    // Beyond the message limit: gRPC ends the stream with RESOURCE_EXHAUSTED.
    ComputeSession session(stub());
    session.SendHeader(DecomposeRequest(1, big, 2));
    session.SendTensor(1, 0, big, 256 * 1024);
    session.WritesDone();
    while (session.Read().ok()) {
    }
    EXPECT_EQ(session.Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  ExpectWorkerServes();
}

TEST_F(BadInputTest, UnknownLayerAndWrongLayerKindAreRefusedByName) {
  ComputeSession session(stub());
  absl::Status s = Refused(session, AtpAttentionRequest(1, "ghost", x_, 2), {&x_});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("layer \"ghost\" is not registered"));
  s = Refused(session, AtpAttentionRequest(2, "lin", x_, 2), {&x_});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("layer \"lin\" is a linear layer"));
  s = Refused(session, LowRankDenseRequest(3, "attn", "z_proj", x_, 2, false), {&x_});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("z_proj"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, MalformedRequestsAreInvalidArgument) {
  ComputeSession session(stub());
  auto no_op = DecomposeRequest(1, x_, 2);
  no_op.clear_decompose();
  absl::Status s = Refused(session, no_op, {&x_});
  EXPECT_THAT(s.message(), HasSubstr("sets no operation"));
  auto bad_rank = DecomposeRequest(2, x_, 2);
  bad_rank.mutable_decompose()->mutable_rank()->set_fraction(1.5);
  s = Refused(session, bad_rank, {&x_});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("rank"));
  const Tensor u = RandomTensor(DType::kF32, {33, 3}, 6);
  const Tensor c = RandomTensor(DType::kF32, {3, kModel}, 7);
  auto factored_attention = LowRankFactoredRequest(3, "attn", "", u, c, false);
  factored_attention.mutable_atp_attention()->set_layer_id("attn");
  s = Refused(session, factored_attention, {&u, &c});
  EXPECT_THAT(s.message(), HasSubstr("only lowrank_linear takes a factored one"));
  // Two requests with one id in flight at once.
  ASSERT_TRUE(session.SendHeader(DecomposeRequest(5, x_, 2)));
  ASSERT_TRUE(session.SendHeader(DecomposeRequest(5, x_, 2)));
  ASSERT_TRUE(session.SendTensor(5, 0, x_));
  auto first = session.Read();
  auto second = session.Read();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_TRUE(first->status.ok()) << first->status;
  EXPECT_THAT(second->status.message(), HasSubstr("request_id 5 is already in flight"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, NanInputIsInvalidArgument) {
  ComputeSession session(stub());
  Tensor nan = x_.Clone();
  nan.data_as<float>()[37] = std::numeric_limits<float>::quiet_NaN();
  absl::Status s = Refused(session, DecomposeRequest(1, nan, 2), {&nan});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("non-finite"));
  nan.data_as<float>()[37] = std::numeric_limits<float>::infinity();
  s = Refused(session, AtpAttentionRequest(2, "attn", nan, 2), {&nan});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  ExpectServesNext(session);
}

TEST_F(BadInputTest, GarbageBytesToEveryMethodAreInvalidArgument) {
  // Field 1 with the invalid wire type 7: no protobuf parser accepts it.
  const std::string garbage("\x0f\xff\xfe\x00garbage", 11);
  const std::vector<std::pair<std::string, bool>> methods = {
      {"/atp.v1.Worker/GetServerInfo", false}, {"/atp.v1.Worker/RegisterLayer", true},
      {"/atp.v1.Worker/ListLayers", false},    {"/atp.v1.Worker/RemoveLayer", false},
      {"/atp.v1.Worker/Compute", true},        {"/atp.v1.Worker/GetStatistics", false},
      {"/grpc.health.v1.Health/Check", false}, {"/grpc.health.v1.Health/Watch", true},
  };
  for (const auto& [method, streaming] : methods) {
    auto result = CallWithBytes(worker_->channel(), method, garbage, streaming);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << result.status.error_message();
  }
  // Well-formed outside, garbage inside: a ComputeRequest whose header is not a RequestHeader.
  auto result = CallWithBytes(worker_->channel(), "/atp.v1.Worker/Compute",
                              std::string("\x0a\x03\x0f\xff\xfe", 5), true);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("not a valid atp.v1.RequestHeader"));
  ExpectWorkerServes();
}

TEST_F(BadInputTest, ChunkForNoRequestEndsTheStreamAfterAnsweringCompleteRequests) {
  ComputeSession session(stub());
  ASSERT_TRUE(session.SendRequest(DecomposeRequest(1, x_, 2), {&x_}));
  ASSERT_TRUE(session.SendChunk(42, 0, 0, "stray"));
  auto got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->status.ok()) << got->status;  // complete before the stray chunk
  EXPECT_FALSE(session.Read().ok());
  grpc::Status end = session.Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(end.error_message(), HasSubstr("request_id 42, which is not awaiting input"));
  ExpectWorkerServes();
}

TEST_F(BadInputTest, PerStreamLimitRefusesTheExtraRequestAndAnswersTheRestInOrder) {
  ComputeSession session(stub());
  for (uint64_t id = 1; id <= 5; ++id) ASSERT_TRUE(session.SendHeader(DecomposeRequest(id, x_, 2)));
  for (uint64_t id = 1; id <= 5; ++id) ASSERT_TRUE(session.SendTensor(id, 0, x_));
  for (uint64_t id = 1; id <= 5; ++id) {
    auto got = session.Read();
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->header.request_id(), id);
    if (id <= 4) {
      EXPECT_TRUE(got->status.ok()) << got->status;
    } else {
      EXPECT_EQ(got->status.code(), absl::StatusCode::kResourceExhausted);
      EXPECT_THAT(got->status.message(), HasSubstr("max_inflight_per_stream"));
    }
  }
  ExpectServesNext(session);
}

TEST_F(BadInputTest, RequestTimeoutIsDeadlineExceededInBand) {
  ComputeSession session(stub());
  auto header = DecomposeRequest(1, x_, 2);
  header.set_timeout_ms(1);
  ASSERT_TRUE(session.SendHeader(header));
  // Make sure the millisecond has passed before any payload arrives.
  const absl::Time sent = absl::Now();
  while (absl::Now() < sent + absl::Milliseconds(20)) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(session.SendTensor(1, 0, x_));
  auto got = session.Read();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(got->status.message(), HasSubstr("timeout_ms of 1"));
  ExpectServesNext(session);
}

TEST_F(BadInputTest, TimeoutPassingDuringLongWorkIsDeadlineExceededAndTheWorkerGoesOn) {
  // Exact attention over 4096 tokens takes far longer than 5 ms; wherever the deadline finds the
  // request (receiving, queued or between compute steps), the answer is DEADLINE_EXCEEDED.
  auto worker = TestWorker::Start();  // default limits: 4096 tokens are allowed
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(
      RegisterLayer(worker->stub(), "wide", RandomAttentionLayer(128, 4, 4, 32, false, 30)).ok());
  const Tensor x = RandomTensor(DType::kF32, {4096, 128}, 31);
  ComputeSession session(worker->stub());
  auto header = ExactAttentionRequest(1, "wide", x, false);
  header.set_timeout_ms(5);
  ASSERT_TRUE(session.SendRequest(header, {&x}));
  auto got = session.Read();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status.code(), absl::StatusCode::kDeadlineExceeded) << got->status;
  EXPECT_THAT(got->status.message(), HasSubstr("timeout_ms of 5"));
  ASSERT_TRUE(session.SendRequest(DecomposeRequest(2, x_, 2), {&x_}));
  auto next = session.Read();
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(next->status.ok()) << next->status;
}

TEST_F(BadInputTest, TimeoutPassingWhileTheInputStallsIsAnsweredWithoutMoreInput) {
  ComputeSession session(stub());
  auto header = DecomposeRequest(1, x_, 2);
  header.set_timeout_ms(50);
  ASSERT_TRUE(session.SendHeader(header));
  const std::string bytes(static_cast<const char*>(x_.data()), 100);
  ASSERT_TRUE(session.SendChunk(1, 0, 0, bytes));  // and nothing more
  auto got = session.Read();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(got->status.message(), HasSubstr("while waiting for its input"));
  auto stats = WaitForStatistics(
      stub(), [](const atp::v1::Statistics& s) { return s.inflight_requests() == 0; });
  EXPECT_EQ(stats.inflight_requests(), 0u);
  ExpectServesNext(session);
}

TEST_F(BadInputTest, StreamDeadlineEndsTheStreamAndFreesItsRequests) {
  {
    ComputeSession session(stub(), absl::Milliseconds(300));
    ASSERT_TRUE(session.SendHeader(DecomposeRequest(1, x_, 2)));  // payload never comes
    // Request 1's deadline is the stream's: the worker may answer it in band (DEADLINE_EXCEEDED)
    // in the moment before gRPC ends the stream, or not (a race by nature: both happen at the
    // deadline; a loaded CI machine saw the in-band answer once). Nothing else may come.
    auto got = session.Read();
    if (got.ok()) {
      EXPECT_EQ(got->status.code(), absl::StatusCode::kDeadlineExceeded) << got->status;
      EXPECT_THAT(got->status.message(), HasSubstr("deadline"));
      EXPECT_FALSE(session.Read().ok());
    }
    EXPECT_EQ(session.Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  auto stats = WaitForStatistics(
      stub(), [](const atp::v1::Statistics& s) { return s.inflight_requests() == 0; });
  EXPECT_EQ(stats.inflight_requests(), 0u);
  ExpectWorkerServes();
}

TEST_F(BadInputTest, ClientThatVanishesMidStreamLeavesNothingBehind) {
  const Tensor big = RandomTensor(DType::kF32, {512, 256}, 12);  // 512 KiB
  for (int round = 0; round < 3; ++round) {
    auto channel = grpc::CreateChannel(worker_->target(), grpc::InsecureChannelCredentials());
    auto stub = atp::v1::Worker::NewStub(channel);
    auto session = std::make_unique<ComputeSession>(*stub);
    ASSERT_TRUE(session->SendRequest(DecomposeRequest(2, x_, 2), {&x_}));
    ASSERT_TRUE(session->SendHeader(DecomposeRequest(1, big, 2)));
    const std::string bytes(static_cast<const char*>(big.data()), 200 * 1024);
    ASSERT_TRUE(session->SendChunk(1, 0, 0, absl::string_view(bytes).substr(0, 60000)));
    session.reset();  // cancels the call mid-upload
    stub.reset();
    channel.reset();
  }
  // The same for a layer upload.
  {
    auto spec = RandomLinearLayer(256, 512, false, 13);  // 512 KiB
    grpc::ClientContext context;
    Prepare(&context);
    atp::v1::RegisterLayerResponse response;
    auto writer = stub().RegisterLayer(&context, &response);
    atp::v1::RegisterLayerRequest header;
    *header.mutable_header() = MakeLayerHeader("half", spec, true);
    ASSERT_TRUE(writer->Write(header));
    context.TryCancel();
    EXPECT_FALSE(writer->Finish().ok());
  }
  auto stats = WaitForStatistics(
      stub(), [](const atp::v1::Statistics& s) { return s.inflight_requests() == 0; });
  EXPECT_EQ(stats.inflight_requests(), 0u);
  // The aborted upload's reservation is gone: a layer that needs most of the limit fits.
  auto fits = RegisterLayer(stub(), "fits", RandomLinearLayer(256, 900, false, 14));
  EXPECT_TRUE(fits.ok()) << fits.status();
  ExpectWorkerServes();
}

TEST_F(BadInputTest, InflightByteBudgetRefusesWhatDoesNotFit) {
  WorkerOptions o = TightOptions();
  o.max_inflight_bytes = 4096;
  auto small = TestWorker::Start(o);
  ASSERT_NE(small, nullptr);
  auto got = RunOne(small->stub(), DecomposeRequest(1, x_, 2), {&x_});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(got->status.message(), HasSubstr("max_inflight_bytes"));
}

// ---- RegisterLayer ------------------------------------------------------------------------------

absl::Status Upload(atp::v1::Worker::Stub& stub, const atp::v1::LayerHeader& header,
                    const kernels::LayerSpec& spec, bool send_all = true) {
  grpc::ClientContext context;
  Prepare(&context);
  atp::v1::RegisterLayerResponse response;
  auto writer = stub.RegisterLayer(&context, &response);
  atp::v1::RegisterLayerRequest first;
  *first.mutable_header() = header;
  bool ok = writer->Write(first);
  uint32_t index = 0;
  for (const auto& [name, t] : spec.weights) {
    atp::v1::RegisterLayerRequest chunk;
    chunk.mutable_chunk()->set_tensor_index(index++);
    const size_t n = send_all ? t.byte_size() : t.byte_size() / 2;
    chunk.mutable_chunk()->set_data(static_cast<const char*>(t.data()), n);
    if (ok) ok = writer->Write(chunk);
    if (!send_all) break;
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

TEST_F(BadInputTest, BadLayerUploadsGetSpecificErrors) {
  const auto spec = RandomAttentionLayer(kModel, 2, 1, 8, false, 20);
  auto header = MakeLayerHeader("good-id", spec, true);

  auto bad_id = header;
  bad_id.set_layer_id("bad id!");
  absl::Status s = Upload(stub(), bad_id, spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("layer_id contains the byte 0x20"));

  auto wrong_shape = header;
  for (auto& t : *wrong_shape.mutable_tensors()) {
    if (t.name() == "k_proj.weight") {
      t.set_shape(1, kModel + 1);
      t.set_byte_size(t.byte_size() / kModel * (kModel + 1));
    }
  }
  s = Upload(stub(), wrong_shape, spec);
  EXPECT_THAT(s.message(), HasSubstr("k_proj.weight has shape [8,17], want [8,16]"));

  auto missing = header;
  missing.mutable_tensors()->RemoveLast();
  s = Upload(stub(), missing, spec);
  EXPECT_THAT(s.message(), HasSubstr("layer is missing"));

  auto bad_config = header;
  bad_config.mutable_attention()->set_num_kv_heads(3);
  s = Upload(stub(), bad_config, spec);
  EXPECT_THAT(s.message(), HasSubstr("num_kv_heads is 3"));

  auto lying = header;
  lying.set_digest(std::string(64, 'a'));
  s = Upload(stub(), lying, spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("the header claims digest aaaa"));

  auto malformed_digest = header;
  malformed_digest.set_digest("xyz");
  s = Upload(stub(), malformed_digest, spec);
  EXPECT_THAT(s.message(), HasSubstr("not 64 lowercase hex digits"));

  s = Upload(stub(), header, spec, /*send_all=*/false);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("the stream ended before every tensor was sent"));

  auto nan_spec = CloneSpec(spec);
  nan_spec.weights.at("v_proj.weight").data_as<float>()[3] = std::nanf("");
  s = Upload(stub(), MakeLayerHeader("nan-layer", nan_spec, true), nan_spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("v_proj.weight"));

  const auto huge = RandomLinearLayer(512, 600, false, 21);  // 1.2 MB > the 1 MiB limit
  s = Upload(stub(), MakeLayerHeader("huge", huge, true), huge);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);

  grpc::ClientContext context;
  Prepare(&context);
  atp::v1::ListLayersResponse list;
  ASSERT_TRUE(stub().ListLayers(&context, {}, &list).ok());
  EXPECT_EQ(list.layers_size(), 2);  // only the fixture's layers
  ASSERT_TRUE(Upload(stub(), header, spec).ok());
  ExpectWorkerServes();
}

}  // namespace
}  // namespace atp::service::testing
