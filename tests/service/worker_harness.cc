#include "worker_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "atp/wire/chunking.h"
#include "atp/wire/layer_digest.h"
#include "atp/wire/status.h"
#include "atp/wire/tensor_header.h"
#include "gtest/gtest.h"

namespace atp::service::testing {

using kernels::DType;
using kernels::Tensor;

WorkerOptions LoopbackOptions() {
  WorkerOptions o;
  o.listen = "127.0.0.1:0";
  o.metrics_listen = "";
  o.backend = "cpu";
  o.log_level = LogLevel::kWarning;
  o.drain_timeout = absl::Seconds(10);
  return o;
}

std::unique_ptr<TestWorker> TestWorker::Start(const WorkerOptions& options) {
  auto server = WorkerServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  auto w = std::unique_ptr<TestWorker>(new TestWorker());
  w->server_ = *std::move(server);
  w->channel_ = grpc::CreateChannel(w->target(), grpc::InsecureChannelCredentials());
  w->stub_ = atp::v1::Worker::NewStub(w->channel_);
  return w;
}

std::string TestWorker::target() const { return absl::StrCat("127.0.0.1:", server_->port()); }

void Prepare(grpc::ClientContext* context, absl::Duration deadline, const std::string& token) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

Tensor RandomTensor(DType dtype, const kernels::Shape& shape, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  const int64_t n = kernels::NumElements(shape);
  std::vector<float> values(static_cast<size_t>(n));
  for (float& v : values) v = normal(rng);
  Tensor f32 = Tensor::FromF32(shape, values);
  return dtype == DType::kF32 ? std::move(f32) : Tensor::CopyOf(f32.view(), dtype);
}

kernels::LayerSpec RandomAttentionLayer(int64_t d_model, int64_t heads, int64_t kv_heads,
                                        int64_t head_dim, bool bias, uint64_t seed, DType dtype) {
  kernels::LayerSpec spec;
  spec.kind = kernels::LayerSpec::Kind::kAttention;
  spec.attention.d_model = d_model;
  spec.attention.num_heads = heads;
  spec.attention.num_kv_heads = kv_heads;
  spec.attention.head_dim = head_dim;
  const float w = 1.0f / std::sqrt(static_cast<float>(d_model));
  const int64_t q = heads * head_dim;
  const int64_t kv = kv_heads * head_dim;
  spec.weights.emplace("q_proj.weight", RandomTensor(dtype, {q, d_model}, seed + 1, w));
  spec.weights.emplace("k_proj.weight", RandomTensor(dtype, {kv, d_model}, seed + 2, w));
  spec.weights.emplace("v_proj.weight", RandomTensor(dtype, {kv, d_model}, seed + 3, w));
  spec.weights.emplace("o_proj.weight", RandomTensor(dtype, {d_model, q}, seed + 4, w));
  if (bias) {
    spec.weights.emplace("q_proj.bias", RandomTensor(dtype, {q}, seed + 5, 0.1f));
    spec.weights.emplace("k_proj.bias", RandomTensor(dtype, {kv}, seed + 6, 0.1f));
    spec.weights.emplace("v_proj.bias", RandomTensor(dtype, {kv}, seed + 7, 0.1f));
    spec.weights.emplace("o_proj.bias", RandomTensor(dtype, {d_model}, seed + 8, 0.1f));
  }
  return spec;
}

kernels::LayerSpec RandomLinearLayer(int64_t n, int64_t d, bool bias, uint64_t seed, DType dtype) {
  kernels::LayerSpec spec;
  spec.kind = kernels::LayerSpec::Kind::kLinear;
  spec.weights.emplace("weight", RandomTensor(dtype, {n, d}, seed + 1, 1.0f / std::sqrt(d)));
  if (bias) spec.weights.emplace("bias", RandomTensor(dtype, {n}, seed + 2, 0.1f));
  return spec;
}

kernels::LayerSpec CloneSpec(const kernels::LayerSpec& spec) {
  kernels::LayerSpec out;
  out.kind = spec.kind;
  out.attention = spec.attention;
  out.linear_default_rank = spec.linear_default_rank;
  for (const auto& [name, t] : spec.weights) out.weights.emplace(name, t.Clone());
  return out;
}

namespace {

std::string DigestConfig(const kernels::LayerSpec& spec) {
  if (spec.kind == kernels::LayerSpec::Kind::kLinear) return std::string(wire::kLinearDigestConfig);
  const auto& c = spec.attention;
  return wire::AttentionDigestConfig(c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.scale,
                                     c.key_scale == kernels::KeyScale::kInvSqrtLen ? 1 : 0);
}

absl::Span<const uint8_t> Bytes(const Tensor& t) {
  return absl::MakeConstSpan(static_cast<const uint8_t*>(t.data()), t.byte_size());
}

}  // namespace

std::string LayerDigestOf(const kernels::LayerSpec& spec) {
  std::vector<wire::DigestTensor> tensors;
  for (const auto& [name, t] : spec.weights) {
    tensors.push_back({name, static_cast<int>(t.dtype()), t.shape(), Bytes(t)});
  }
  return wire::LayerDigest(tensors, DigestConfig(spec));
}

atp::v1::TensorHeader HeaderOf(const std::string& name, const Tensor& t) {
  return wire::MakeTensorHeader(name, static_cast<atp::v1::DType>(t.dtype()), t.shape(), Bytes(t));
}

atp::v1::LayerHeader MakeLayerHeader(const std::string& layer_id, const kernels::LayerSpec& spec,
                                     bool with_digest) {
  atp::v1::LayerHeader h;
  h.set_layer_id(layer_id);
  if (spec.kind == kernels::LayerSpec::Kind::kAttention) {
    const auto& c = spec.attention;
    auto* a = h.mutable_attention();
    a->set_d_model(c.d_model);
    a->set_num_heads(c.num_heads);
    a->set_num_kv_heads(c.num_kv_heads);
    a->set_head_dim(c.head_dim);
    a->set_scale(c.scale);
    a->set_key_scale(c.key_scale == kernels::KeyScale::kInvSqrtLen ? atp::v1::KEY_SCALE_INV_SQRT_LEN
                                                                   : atp::v1::KEY_SCALE_NONE);
  } else {
    h.mutable_linear();
  }
  for (const auto& [name, t] : spec.weights) *h.add_tensors() = HeaderOf(name, t);
  if (with_digest) h.set_digest(LayerDigestOf(spec));
  return h;
}

absl::StatusOr<atp::v1::RegisterLayerResponse> RegisterLayer(atp::v1::Worker::Stub& stub,
                                                             const std::string& layer_id,
                                                             const kernels::LayerSpec& spec,
                                                             const UploadOptions& options) {
  grpc::ClientContext context;
  Prepare(&context, absl::Seconds(60), options.token);
  atp::v1::RegisterLayerResponse response;
  auto writer = stub.RegisterLayer(&context, &response);
  atp::v1::RegisterLayerRequest request;
  *request.mutable_header() = MakeLayerHeader(layer_id, spec, options.send_digest);
  request.mutable_header()->set_replace(options.replace);
  bool ok = writer->Write(request);
  uint32_t index = 0;
  for (const auto& [name, t] : spec.weights) {
    wire::ChunkSplitter split(t.byte_size(), options.chunk_bytes);
    while (ok && !split.done()) {
      auto piece = split.Next();
      atp::v1::RegisterLayerRequest chunk;
      chunk.mutable_chunk()->set_tensor_index(index);
      chunk.mutable_chunk()->set_offset(piece.offset);
      chunk.mutable_chunk()->set_data(static_cast<const char*>(t.data()) + piece.offset,
                                      piece.length);
      ok = writer->Write(chunk);  // false once the worker answered early (already registered)
    }
    ++index;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return wire::FromGrpcStatus(status);
  return response;
}

ComputeSession::ComputeSession(atp::v1::Worker::Stub& stub, absl::Duration deadline,
                               const std::string& token) {
  Prepare(&context_, deadline, token);
  stream_ = stub.Compute(&context_);
}

ComputeSession::~ComputeSession() {
  if (!finished_) {
    context_.TryCancel();
    stream_->Finish();
  }
}

bool ComputeSession::Send(const atp::v1::ComputeRequest& request) {
  return stream_->Write(request);
}

bool ComputeSession::SendHeader(const atp::v1::RequestHeader& header) {
  atp::v1::ComputeRequest r;
  *r.mutable_header() = header;
  return Send(r);
}

bool ComputeSession::SendChunk(uint64_t request_id, uint32_t tensor_index, uint64_t offset,
                               absl::string_view data) {
  atp::v1::ComputeRequest r;
  auto* c = r.mutable_chunk();
  c->set_request_id(request_id);
  c->set_tensor_index(tensor_index);
  c->set_offset(offset);
  c->set_data(std::string(data));
  return Send(r);
}

bool ComputeSession::SendTensor(uint64_t request_id, uint32_t tensor_index, const Tensor& t,
                                uint64_t chunk_bytes) {
  wire::ChunkSplitter split(t.byte_size(), chunk_bytes);
  while (!split.done()) {
    auto piece = split.Next();
    if (!SendChunk(
            request_id, tensor_index, piece.offset,
            absl::string_view(static_cast<const char*>(t.data()) + piece.offset, piece.length))) {
      return false;
    }
  }
  return true;
}

bool ComputeSession::SendRequest(const atp::v1::RequestHeader& header,
                                 const std::vector<const Tensor*>& inputs, uint64_t chunk_bytes) {
  if (!SendHeader(header)) return false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!SendTensor(header.request_id(), static_cast<uint32_t>(i), *inputs[i], chunk_bytes)) {
      return false;
    }
  }
  return true;
}

void ComputeSession::WritesDone() { stream_->WritesDone(); }

absl::StatusOr<Response> ComputeSession::Read() {
  atp::v1::ComputeResponse msg;
  if (!stream_->Read(&msg)) return absl::UnavailableError("the stream ended before a response");
  if (!msg.has_header()) return absl::InternalError("a response began without a header");
  Response r;
  r.header = msg.header();
  r.status = wire::StatusFromCode(r.header.code(), r.header.message());
  if (!r.status.ok()) return r;
  std::vector<wire::TensorAssembler::Target> targets;
  r.outputs.reserve(r.header.outputs_size());
  for (const auto& h : r.header.outputs()) {
    auto layout = wire::CheckTensorHeader(h, 0, h.name());
    if (!layout.ok()) return layout.status();
    r.outputs.emplace_back(static_cast<DType>(h.dtype()), layout->shape);
    Tensor& t = r.outputs.back();
    targets.push_back(
        {h.name(), absl::MakeSpan(static_cast<uint8_t*>(t.data()), t.byte_size()), h.crc32c()});
  }
  wire::TensorAssembler assembler(std::move(targets), 0);
  while (!assembler.complete()) {
    if (!stream_->Read(&msg)) return absl::UnavailableError("the stream ended inside a response");
    if (!msg.has_chunk() || msg.chunk().request_id() != r.header.request_id()) {
      return absl::InternalError("expected a chunk of the current response");
    }
    const std::string& data = msg.chunk().data();
    const absl::Span<const uint8_t> piece[] = {
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size())};
    if (absl::Status s = assembler.Add(msg.chunk().tensor_index(), msg.chunk().offset(), piece);
        !s.ok()) {
      return s;
    }
  }
  return r;
}

grpc::Status ComputeSession::Finish() {
  finished_ = true;
  return stream_->Finish();
}

namespace {

atp::v1::RequestHeader Base(uint64_t id, const Tensor& x) {
  atp::v1::RequestHeader h;
  h.set_request_id(id);
  *h.mutable_input()->mutable_dense() = HeaderOf("x", x);
  return h;
}

}  // namespace

atp::v1::RequestHeader AtpAttentionRequest(uint64_t id, const std::string& layer_id,
                                           const Tensor& x, std::optional<uint32_t> fixed_rank) {
  auto h = Base(id, x);
  h.mutable_atp_attention()->set_layer_id(layer_id);
  if (fixed_rank) h.mutable_atp_attention()->mutable_rank()->set_fixed(*fixed_rank);
  return h;
}

atp::v1::RequestHeader ExactAttentionRequest(uint64_t id, const std::string& layer_id,
                                             const Tensor& x, bool causal) {
  auto h = Base(id, x);
  h.mutable_exact_attention()->set_layer_id(layer_id);
  h.mutable_exact_attention()->set_causal(causal);
  return h;
}

atp::v1::RequestHeader DecomposeRequest(uint64_t id, const Tensor& x, uint32_t fixed_rank) {
  auto h = Base(id, x);
  h.mutable_decompose()->mutable_rank()->set_fixed(fixed_rank);
  return h;
}

atp::v1::RequestHeader LowRankDenseRequest(uint64_t id, const std::string& layer_id,
                                           const std::string& weight, const Tensor& x,
                                           uint32_t fixed_rank, bool factored_output) {
  auto h = Base(id, x);
  auto* op = h.mutable_lowrank_linear();
  op->set_layer_id(layer_id);
  op->set_weight(weight);
  op->mutable_rank()->set_fixed(fixed_rank);
  op->set_output_form(factored_output ? atp::v1::OUTPUT_FORM_FACTORED : atp::v1::OUTPUT_FORM_DENSE);
  return h;
}

atp::v1::RequestHeader LowRankFactoredRequest(uint64_t id, const std::string& layer_id,
                                              const std::string& weight, const Tensor& u,
                                              const Tensor& c, bool factored_output) {
  atp::v1::RequestHeader h;
  h.set_request_id(id);
  *h.mutable_input()->mutable_factored()->mutable_u() = HeaderOf("u", u);
  *h.mutable_input()->mutable_factored()->mutable_c() = HeaderOf("c", c);
  auto* op = h.mutable_lowrank_linear();
  op->set_layer_id(layer_id);
  op->set_weight(weight);
  op->set_output_form(factored_output ? atp::v1::OUTPUT_FORM_FACTORED : atp::v1::OUTPUT_FORM_DENSE);
  return h;
}

absl::StatusOr<Response> RunOne(atp::v1::Worker::Stub& stub, const atp::v1::RequestHeader& header,
                                const std::vector<const Tensor*>& inputs) {
  ComputeSession session(stub);
  if (!session.SendRequest(header, inputs)) {
    return wire::FromGrpcStatus(session.Finish());
  }
  session.WritesDone();
  auto r = session.Read();
  grpc::Status end = session.Finish();
  if (!end.ok()) return wire::FromGrpcStatus(end);
  return r;
}

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.byte_size() == b.byte_size() &&
         std::memcmp(a.data(), b.data(), a.byte_size()) == 0;
}

namespace {

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Valid() || !buffer.Dump(&slices).ok()) return out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

}  // namespace

RawCallResult CallWithBytes(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& method, const std::string& bytes, bool streaming) {
  RawCallResult result;
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  Prepare(&context, absl::Seconds(20));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  if (!streaming) {
    grpc::ByteBuffer response;
    absl::Notification done;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                      [&](grpc::Status s) {
                        result.status = std::move(s);
                        done.Notify();
                      });
    done.WaitForNotification();
    if (result.status.ok()) result.responses.push_back(Flatten(response));
    return result;
  }
  grpc::CompletionQueue cq;
  auto call = generic.PrepareCall(&context, method, &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  call->Write(request, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  // Read until the stream ends, then take the status.
  for (int i = 0; i < 100000; ++i) {
    grpc::ByteBuffer response;
    call->Read(&response, reinterpret_cast<void*>(4));
    cq.Next(&tag, &ok);
    if (!ok) break;
    result.responses.push_back(Flatten(response));
  }
  call->Finish(&result.status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return result;
}

atp::v1::Statistics WaitForStatistics(atp::v1::Worker::Stub& stub,
                                      const std::function<bool(const atp::v1::Statistics&)>& done,
                                      absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  atp::v1::Statistics stats;
  for (int attempt = 0; attempt < 10000; ++attempt) {
    grpc::ClientContext context;
    Prepare(&context, absl::Seconds(10));
    stats.Clear();
    grpc::Status s = stub.GetStatistics(&context, atp::v1::GetStatisticsRequest(), &stats);
    if (s.ok() && done(stats)) break;
    if (absl::Now() > end) break;
    absl::SleepFor(absl::Milliseconds(5));  // polling interval of a bounded wait
  }
  return stats;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect to port ", port, ": ", std::strerror(errno)));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace atp::service::testing
