// atp-worker on loopback, beside raw TCP measured in the same run:
//  1. Throughput of a large tensor round trip: low-rank linear with a factored input and a factored
//     output on a linear layer without bias, so that the output U' is the input U (L × r) plus a
//     small C' — the chained low-rank case, whose compute is a copy. 256 MiB go in and 256 MiB come
//     back. Anchor: a raw TCP store-and-forward echo of the same bytes on the same machine (the
//     client sends everything, the server receives everything, then sends it all back), as the
//     worker must have a whole input before it computes.
//  2. Round trip of a small call, median and p99: unary GetServerInfo, and a decompose of a 16×16
//     input on an open Compute stream. Anchor: a 1 KiB raw TCP ping-pong.
// The worker is the atp-worker binary in its own process (CPU backend) on 127.0.0.1 with an
// OS-chosen port, and the TCP echo server is a child process too, so both paths cross processes as
// in a deployment.
//
// Usage: atp_service_bench [--worker=PATH] [--mib=256] [--rounds=5] [--calls=2000]
// [--chunk-kib=1024]
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "atp/v1/worker.grpc.pb.h"
#include "atp/wire/chunking.h"
#include "atp/wire/crc32c.h"
#include "atp/wire/stream_codec.h"
#include "atp/wire/tensor_header.h"

namespace {

namespace wire = atp::wire;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

void Fail(const std::string& what) {
  std::fprintf(stderr, "atp_service_bench: %s\n", what.c_str());
  std::exit(1);
}

// ---- raw TCP ------------------------------------------------------------------------------------

bool SendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool RecvAll(int fd, char* p, size_t n) {
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// A store-and-forward echo server on 127.0.0.1: each message is an 8-byte length and a payload,
// received whole and then sent back whole.
class EchoServer {
 public:
  EchoServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener_, 1) != 0) {
      Fail("cannot listen for the TCP anchor");
    }
    socklen_t len = sizeof(addr);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    child_ = ::fork();
    if (child_ == 0) {
      Serve();
      ::_exit(0);
    }
  }
  ~EchoServer() {
    ::close(listener_);
    ::waitpid(child_, nullptr, 0);  // the child ends when the client closes its connection
  }
  int port() const { return port_; }

 private:
  void Serve() {
    const int fd = ::accept(listener_, nullptr, nullptr);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> buffer;
    for (;;) {
      uint64_t n;
      if (!RecvAll(fd, reinterpret_cast<char*>(&n), sizeof(n))) break;
      buffer.resize(n);
      if (!RecvAll(fd, buffer.data(), n) || !SendAll(fd, buffer.data(), n)) break;
    }
    ::close(fd);
  }

  int listener_;
  int port_;
  pid_t child_ = -1;
};

class EchoClient {
 public:
  explicit EchoClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Fail("connect");
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~EchoClient() { ::close(fd_); }

  // One round trip of `out`; the echo lands in `in`.
  void RoundTrip(const std::vector<char>& out, std::vector<char>* in) {
    const uint64_t n = out.size();
    in->resize(n);
    if (!SendAll(fd_, reinterpret_cast<const char*>(&n), sizeof(n)) ||
        !SendAll(fd_, out.data(), n) || !RecvAll(fd_, in->data(), n)) {
      Fail("TCP echo failed");
    }
  }

 private:
  int fd_;
};

// ---- the worker through raw gRPC messages (as a client built on atp_wire sends them) -----------

void NoDestroy(void*) {}

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& m) {
  grpc::Slice s(m.SerializeAsString());
  return grpc::ByteBuffer(&s, 1);
}

// Sends one request (header + chunks straight from `inputs`) on a new Compute stream and
// reassembles its response into `outputs`, with one outstanding write and one outstanding read.
// Returns the response header.
atp::v1::ResponseHeader RawRoundTrip(grpc::GenericStub& stub, const atp::v1::RequestHeader& header,
                                     const std::vector<std::pair<const char*, size_t>>& inputs,
                                     uint32_t chunk_bytes,
                                     std::vector<std::vector<uint8_t>>* outputs) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, "/atp.v1.Worker/Compute", &cq);
  enum Tag : intptr_t { kStart = 1, kWrite, kRead, kWritesDone, kFinish };
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(kStart));
  cq.Next(&tag, &ok);

  // The messages to write, built lazily.
  size_t input = 0;
  wire::ChunkSplitter split(inputs.empty() ? 0 : inputs[0].second, chunk_bytes);
  bool header_sent = false, writes_done = false;
  auto next_message = [&](grpc::ByteBuffer* out) -> bool {
    if (!header_sent) {
      atp::v1::ComputeRequest r;
      *r.mutable_header() = header;
      *out = Serialize(r);
      header_sent = true;
      return true;
    }
    while (input < inputs.size() && split.done()) {
      if (++input < inputs.size()) split = wire::ChunkSplitter(inputs[input].second, chunk_bytes);
    }
    if (input >= inputs.size()) return false;
    auto piece = split.Next();
    grpc::Slice slices[2] = {
        grpc::Slice(wire::EncodeChunkPrefix(header.request_id(), static_cast<uint32_t>(input),
                                            piece.offset, piece.length)),
        grpc::Slice(const_cast<char*>(inputs[input].first) + piece.offset, piece.length,
                    &NoDestroy)};
    *out = grpc::ByteBuffer(slices, 2);
    return true;
  };

  grpc::ByteBuffer write_buf, read_buf;
  atp::v1::ResponseHeader response;
  std::optional<wire::TensorAssembler> assembler;
  bool have_header = false, done_reading = false;
  if (next_message(&write_buf)) call->Write(write_buf, reinterpret_cast<void*>(kWrite));
  call->Read(&read_buf, reinterpret_cast<void*>(kRead));
  int pending = 2;
  while (pending > 0 && cq.Next(&tag, &ok)) {
    --pending;
    const auto t = static_cast<Tag>(reinterpret_cast<intptr_t>(tag));
    if (t == kWrite) {
      if (!ok) continue;
      if (next_message(&write_buf)) {
        call->Write(write_buf, reinterpret_cast<void*>(kWrite));
        ++pending;
      } else if (!writes_done) {
        writes_done = true;
        call->WritesDone(reinterpret_cast<void*>(kWritesDone));
        ++pending;
      }
    } else if (t == kRead) {
      if (!ok) break;
      std::vector<grpc::Slice> slices;
      read_buf.Dump(&slices);
      std::vector<absl::Span<const uint8_t>> pieces;
      for (const auto& s : slices) pieces.push_back(absl::MakeConstSpan(s.begin(), s.size()));
      wire::DecodedStreamMessage msg;
      if (!wire::DecodeStreamMessage(pieces, &msg).ok()) Fail("undecodable response");
      if (!have_header) {
        if (msg.kind != wire::DecodedStreamMessage::Kind::kHeader ||
            !response.ParseFromString(msg.header)) {
          Fail("expected a response header");
        }
        have_header = true;
        if (response.code() != 0) Fail(absl::StrCat("request failed: ", response.message()));
        std::vector<wire::TensorAssembler::Target> targets;
        outputs->resize(response.outputs_size());
        for (int i = 0; i < response.outputs_size(); ++i) {
          (*outputs)[i].resize(response.outputs(i).byte_size());
          targets.push_back({response.outputs(i).name(), absl::MakeSpan((*outputs)[i]),
                             response.outputs(i).crc32c()});
        }
        assembler.emplace(std::move(targets), 0);
      } else {
        if (msg.kind != wire::DecodedStreamMessage::Kind::kChunk) Fail("expected a chunk");
        if (!assembler->Add(msg.chunk.tensor_index, msg.chunk.offset, msg.chunk.data).ok()) {
          Fail("bad response chunk");
        }
      }
      done_reading = assembler.has_value() && assembler->complete();
      if (!done_reading) {
        call->Read(&read_buf, reinterpret_cast<void*>(kRead));
        ++pending;
      }
    }
  }
  if (!done_reading) Fail("the response was incomplete");
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(kFinish));
  // Drain until Finish completes (reads may be pending after WritesDone).
  for (int i = 0; i < 1000 && cq.Next(&tag, &ok); ++i) {
    if (reinterpret_cast<intptr_t>(tag) == kFinish) break;
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return response;
}

// Registers a layer whose tensors are random f32 of the given shapes.
void Register(atp::v1::Worker::Stub& stub, atp::v1::LayerHeader header,
              const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<std::vector<float>> data;
  for (const auto& [name, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float>& v = data.emplace_back(static_cast<size_t>(n));
    for (float& x : v) x = normal(rng);
    *header.add_tensors() = wire::MakeTensorHeader(
        name, atp::v1::DTYPE_F32, shape,
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4));
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  atp::v1::RegisterLayerResponse resp;
  auto writer = stub.RegisterLayer(&ctx, &resp);
  atp::v1::RegisterLayerRequest h;
  *h.mutable_header() = header;
  writer->Write(h);
  for (size_t i = 0; i < data.size(); ++i) {
    atp::v1::RegisterLayerRequest c;
    c.mutable_chunk()->set_tensor_index(static_cast<uint32_t>(i));
    c.mutable_chunk()->set_data(reinterpret_cast<const char*>(data[i].data()), data[i].size() * 4);
    writer->Write(c);
  }
  writer->WritesDone();
  if (!writer->Finish().ok()) Fail("cannot register layer " + header.layer_id());
}

// Round trips of one small request after another on an open Compute stream (header and payload
// corked into one write by the buffer hint); returns the client-side and worker-side times in µs.
void SmallCalls(atp::v1::Worker::Stub& stub, atp::v1::RequestHeader header,
                const std::vector<float>& x, int calls, std::vector<double>* round_trip_us,
                std::vector<double>* worker_us, const std::vector<float>& second = {}) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  auto stream = stub.Compute(&ctx);
  atp::v1::ComputeRequest h, c, c2;
  *h.mutable_header() = header;
  c.mutable_chunk()->set_data(reinterpret_cast<const char*>(x.data()), x.size() * 4);
  c2.mutable_chunk()->set_tensor_index(1);
  c2.mutable_chunk()->set_data(reinterpret_cast<const char*>(second.data()), second.size() * 4);
  atp::v1::ComputeResponse r;
  const int warmup = calls / 10;
  for (int i = 0; i < calls + warmup; ++i) {
    h.mutable_header()->set_request_id(i);
    c.mutable_chunk()->set_request_id(i);
    c2.mutable_chunk()->set_request_id(i);
    const auto t0 = Clock::now();
    stream->Write(h, grpc::WriteOptions().set_buffer_hint());
    if (second.empty()) {
      stream->Write(c);
    } else {
      stream->Write(c, grpc::WriteOptions().set_buffer_hint());
      stream->Write(c2);
    }
    if (!stream->Read(&r) || r.header().code() != 0) {
      Fail("small compute failed: " + r.ShortDebugString());
    }
    const int outputs = r.header().outputs_size();
    const auto& t = r.header().timing();
    const double on_worker = static_cast<double>(t.receive_us() + t.queue_us() + t.compute_us());
    for (int k = 0; k < outputs; ++k) {
      if (!stream->Read(&r) || !r.has_chunk()) Fail("small compute: missing output chunk");
    }
    if (i >= warmup) {
      round_trip_us->push_back(Seconds(t0, Clock::now()) * 1e6);
      worker_us->push_back(on_worker);
    }
  }
  stream->WritesDone();
  stream->Finish();
}

// The same round trip with the generated protobuf stub (payload copied into `bytes` fields).
void StubRoundTrip(atp::v1::Worker::Stub& stub, const atp::v1::RequestHeader& header,
                   const std::vector<std::pair<const char*, size_t>>& inputs, uint32_t chunk_bytes,
                   std::vector<std::string>* outputs) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  auto stream = stub.Compute(&context);
  std::thread writer([&] {
    atp::v1::ComputeRequest r;
    *r.mutable_header() = header;
    stream->Write(r);
    for (size_t i = 0; i < inputs.size(); ++i) {
      wire::ChunkSplitter split(inputs[i].second, chunk_bytes);
      while (!split.done()) {
        auto p = split.Next();
        atp::v1::ComputeRequest c;
        c.mutable_chunk()->set_request_id(header.request_id());
        c.mutable_chunk()->set_tensor_index(static_cast<uint32_t>(i));
        c.mutable_chunk()->set_offset(p.offset);
        c.mutable_chunk()->set_data(inputs[i].first + p.offset, p.length);
        stream->Write(c);
      }
    }
    stream->WritesDone();
  });
  atp::v1::ComputeResponse msg;
  if (!stream->Read(&msg) || !msg.has_header() || msg.header().code() != 0)
    Fail("stub request failed");
  const atp::v1::ResponseHeader h = msg.header();
  outputs->assign(h.outputs_size(), std::string());
  for (int i = 0; i < h.outputs_size(); ++i) outputs->at(i).reserve(h.outputs(i).byte_size());
  uint64_t want = 0, got = 0;
  for (const auto& o : h.outputs()) want += o.byte_size();
  while (got < want && stream->Read(&msg)) {
    outputs->at(msg.chunk().tensor_index()).append(msg.chunk().data());
    got += msg.chunk().data().size();
  }
  writer.join();
  for (int i = 0; i < h.outputs_size(); ++i) {
    if (wire::Crc32c(outputs->at(i).data(), outputs->at(i).size()) != h.outputs(i).crc32c()) {
      Fail("CRC mismatch");
    }
  }
  stream->Finish();
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

}  // namespace

int main(int argc, char** argv) {
  int mib = 256, rounds = 5, calls = 2000, chunk_kib = 1024;
  std::string worker_path = ATP_WORKER_BINARY;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (absl::ConsumePrefix(&a, "--worker="))
      worker_path = std::string(a);
    else if (absl::ConsumePrefix(&a, "--mib="))
      (void)absl::SimpleAtoi(a, &mib);
    else if (absl::ConsumePrefix(&a, "--rounds="))
      (void)absl::SimpleAtoi(a, &rounds);
    else if (absl::ConsumePrefix(&a, "--chunk-kib="))
      (void)absl::SimpleAtoi(a, &chunk_kib);
    else if (absl::ConsumePrefix(&a, "--calls="))
      (void)absl::SimpleAtoi(a, &calls);
    else
      Fail(absl::StrCat("unknown argument ", argv[i],
                        "; want --worker=PATH --mib=N --rounds=N --calls=N --chunk-kib=N"));
  }
  // The same malloc settings as the worker (TuneMallocForLargePayloads): freed payload memory is
  // reused instead of faulted in again, as any client moving large tensors should arrange.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  std::printf("atp service benchmark  %s\n",
              absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(), absl::UTCTimeZone()).c_str());
  std::printf("machine: %s, %u hardware threads\n\n", CpuModel().c_str(),
              std::thread::hardware_concurrency());

  // The worker, in its own process.
  const int64_t rank = 64, width = 64;
  const int64_t length = (int64_t{mib} << 20) / (rank * 4);
  const uint32_t chunk = static_cast<uint32_t>(chunk_kib) * 1024;
  const std::string chunk_flag = absl::StrCat("--chunk-bytes=", chunk);
  int out_pipe[2];
  if (::pipe(out_pipe) != 0) Fail("pipe");
  const pid_t worker_pid = ::fork();
  if (worker_pid == 0) {
    ::dup2(out_pipe[1], STDERR_FILENO);
    ::close(out_pipe[0]);
    const std::string max_len =
        absl::StrCat("--max-sequence-length=", std::max<int64_t>(length, 131072));
    const char* argv_worker[] = {worker_path.c_str(),       "--listen=127.0.0.1:0",
                                 "--metrics-listen=",       "--backend=cpu",
                                 "--max-tensor-bytes=2GiB", "--max-inflight-bytes=8GiB",
                                 max_len.c_str(),           "--log-format=json",
                                 chunk_flag.c_str(),        nullptr};
    ::execv(argv_worker[0], const_cast<char* const*>(argv_worker));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  int worker_port = 0;
  {
    std::string text;
    char buf[4096];
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (worker_port == 0 && Clock::now() < deadline) {
      pollfd p{out_pipe[0], POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      const ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
      const size_t at = text.find("\"port\":");
      if (at != std::string::npos)
        (void)absl::SimpleAtoi(text.substr(at + 7, text.find(',', at) - at - 7), &worker_port);
    }
    if (worker_port == 0) Fail(absl::StrCat("the worker did not start: ", text));
  }
  const std::string target = absl::StrCat("127.0.0.1:", worker_port);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  auto stub = atp::v1::Worker::NewStub(channel);
  grpc::GenericStub generic(channel);

  // A linear layer without bias: W [width, width].
  {
    std::vector<float> w(width * width);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.1f);
    for (float& v : w) v = normal(rng);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    atp::v1::RegisterLayerResponse resp;
    auto writer = stub->RegisterLayer(&ctx, &resp);
    atp::v1::RegisterLayerRequest h;
    h.mutable_header()->set_layer_id("lin");
    h.mutable_header()->mutable_linear();
    const auto bytes =
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4);
    *h.mutable_header()->add_tensors() =
        wire::MakeTensorHeader("weight", atp::v1::DTYPE_F32, {width, width}, bytes);
    writer->Write(h);
    atp::v1::RegisterLayerRequest c;
    c.mutable_chunk()->set_data(reinterpret_cast<const char*>(w.data()), w.size() * 4);
    writer->Write(c);
    writer->WritesDone();
    if (!writer->Finish().ok()) Fail("cannot register the layer");
  }

  {
    atp::v1::LayerHeader attn;
    attn.set_layer_id("attn");
    auto* a = attn.mutable_attention();
    a->set_d_model(16);
    a->set_num_heads(2);
    a->set_head_dim(8);
    Register(*stub, attn,
             {{"q_proj.weight", {16, 16}},
              {"k_proj.weight", {16, 16}},
              {"v_proj.weight", {16, 16}},
              {"o_proj.weight", {16, 16}}});
  }

  // ---- 1. large round trip ----
  std::vector<float> u(static_cast<size_t>(length * rank));
  std::vector<float> cmat(static_cast<size_t>(rank * width));
  {
    std::mt19937 rng(2);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    for (float& v : u) v = uni(rng);
    for (float& v : cmat) v = uni(rng);
  }
  const size_t u_bytes = u.size() * 4, c_bytes = cmat.size() * 4;
  atp::v1::RequestHeader header;
  header.set_request_id(1);
  header.mutable_lowrank_linear()->set_layer_id("lin");
  header.mutable_lowrank_linear()->set_output_form(atp::v1::OUTPUT_FORM_FACTORED);
  *header.mutable_input()->mutable_factored()->mutable_u() = wire::MakeTensorHeader(
      "u", atp::v1::DTYPE_F32, {length, rank},
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(u.data()), u_bytes));
  *header.mutable_input()->mutable_factored()->mutable_c() = wire::MakeTensorHeader(
      "c", atp::v1::DTYPE_F32, {rank, width},
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(cmat.data()), c_bytes));
  const std::vector<std::pair<const char*, size_t>> inputs = {
      {reinterpret_cast<const char*>(u.data()), u_bytes},
      {reinterpret_cast<const char*>(cmat.data()), c_bytes}};

  // The paths take turns round by round, so that a busy machine weighs on all of them alike; each
  // ratio is taken within a round and the medians are reported.
  std::vector<double> tcp_s, raw_s, stub_s, compute_s, receive_s, transfer_s;
  std::vector<double> raw_ratio, transfer_ratio, stub_ratio;
  const uint64_t bytes_in = u_bytes + c_bytes;
  uint64_t bytes_out = 0;
  {
    EchoServer echo;
    EchoClient client(echo.port());
    std::vector<char> out(bytes_in), back;
    std::memcpy(out.data(), u.data(), u_bytes);
    std::vector<std::vector<uint8_t>> raw_outputs;
    std::vector<std::string> stub_outputs;
    client.RoundTrip(out, &back);  // warm-up of every path
    RawRoundTrip(generic, header, inputs, chunk, &raw_outputs);
    StubRoundTrip(*stub, header, inputs, chunk, &stub_outputs);
    for (int r = 0; r < rounds; ++r) {
      auto t0 = Clock::now();
      client.RoundTrip(out, &back);
      tcp_s.push_back(Seconds(t0, Clock::now()));

      t0 = Clock::now();
      auto resp = RawRoundTrip(generic, header, inputs, chunk, &raw_outputs);
      raw_s.push_back(Seconds(t0, Clock::now()));
      compute_s.push_back(resp.timing().compute_us() * 1e-6);
      receive_s.push_back(resp.timing().receive_us() * 1e-6);
      // The round trip less the worker's queue and compute time: the time the bytes travelled.
      transfer_s.push_back(raw_s.back() -
                           (resp.timing().queue_us() + resp.timing().compute_us()) * 1e-6);
      bytes_out = 0;
      for (const auto& o : resp.outputs()) bytes_out += o.byte_size();

      t0 = Clock::now();
      StubRoundTrip(*stub, header, inputs, chunk, &stub_outputs);
      stub_s.push_back(Seconds(t0, Clock::now()));

      // GB/s ratios within the round (the TCP echo moves bytes_in each way).
      const double tcp_rate = 2.0 * bytes_in / tcp_s.back();
      const double moved = static_cast<double>(bytes_in + bytes_out);
      raw_ratio.push_back(moved / raw_s.back() / tcp_rate);
      transfer_ratio.push_back(moved / transfer_s.back() / tcp_rate);
      stub_ratio.push_back(moved / stub_s.back() / tcp_rate);
    }
    if (std::memcmp(raw_outputs[0].data(), u.data(), u_bytes) != 0) Fail("U' differs from U");
  }
  const double grpc_bytes = static_cast<double>(bytes_in + bytes_out);
  const double tcp_gbs = 2.0 * bytes_in / Median(tcp_s) / 1e9;
  const double raw_gbs = grpc_bytes / Median(raw_s) / 1e9;
  const double stub_gbs = grpc_bytes / Median(stub_s) / 1e9;
  std::printf(
      "1. Large round trip: lowrank_linear, factored u [%lld,%lld] + c [%lld,%lld] f32 in, "
      "U' [%lld,%lld] + C' out\n",
      static_cast<long long>(length), static_cast<long long>(rank), static_cast<long long>(rank),
      static_cast<long long>(width), static_cast<long long>(length), static_cast<long long>(rank));
  std::printf(
      "   %.1f MiB in, %.1f MiB out, chunks of %u KiB; median of %d rounds; GB/s = (bytes in + "
      "bytes out) / round-trip time\n",
      bytes_in / 1048576.0, bytes_out / 1048576.0, chunk / 1024, rounds);
  std::printf("   %-46s %7.3f s  %6.2f GB/s  (anchor)\n", "raw TCP store-and-forward echo",
              Median(tcp_s), tcp_gbs);
  std::printf("   %-46s %7.3f s  %6.2f GB/s  %5.1f%% of raw TCP\n",
              "atp-worker, client sending raw chunks", Median(raw_s), raw_gbs,
              100.0 * Median(raw_ratio));
  const double transfer_gbs = grpc_bytes / Median(transfer_s) / 1e9;
  std::printf(
      "   %-46s %7.3f s  %6.2f GB/s  %5.1f%% of raw TCP  (worker: receive %.3f s, "
      "compute %.3f s)\n",
      "  the same less the worker's queue and compute", Median(transfer_s), transfer_gbs,
      100.0 * Median(transfer_ratio), Median(receive_s), Median(compute_s));
  std::printf("   %-46s %7.3f s  %6.2f GB/s  %5.1f%% of raw TCP\n",
              "atp-worker, generated protobuf stub client", Median(stub_s), stub_gbs,
              100.0 * Median(stub_ratio));
  std::printf(
      "   (percentages: median over rounds of the ratio to the TCP echo of the same round)\n");

  // ---- 2. small calls ----
  std::vector<double> tcp_us, info_us;
  {
    EchoServer echo;
    EchoClient client(echo.port());
    std::vector<char> out(1024, 'x'), back;
    for (int i = 0; i < calls / 10; ++i) client.RoundTrip(out, &back);
    for (int i = 0; i < calls; ++i) {
      const auto t0 = Clock::now();
      client.RoundTrip(out, &back);
      tcp_us.push_back(Seconds(t0, Clock::now()) * 1e6);
    }
  }
  for (int i = 0; i < calls + calls / 10; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    atp::v1::ServerInfo info;
    const auto t0 = Clock::now();
    if (!stub->GetServerInfo(&ctx, {}, &info).ok()) Fail("GetServerInfo failed");
    if (i >= calls / 10) info_us.push_back(Seconds(t0, Clock::now()) * 1e6);
  }
  std::vector<double> atp_us, atp_worker_us, decompose_us, decompose_worker_us, lin_us,
      lin_worker_us;
  {
    // The smallest useful call: y = u·(c·Wᵀ) on the registered linear layer, u [16,2], c [2,64]:
    // a factored input, one dense output, next to no compute.
    std::vector<float> uc(16 * 2 + 2 * width);
    std::mt19937 rng(4);
    std::normal_distribution<float> normal;
    for (float& v : uc) v = normal(rng);
    const auto ub = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(uc.data()), 16 * 2 * 4);
    const auto cb =
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(uc.data() + 32), 2 * width * 4);
    atp::v1::RequestHeader h;
    *h.mutable_input()->mutable_factored()->mutable_u() =
        wire::MakeTensorHeader("u", atp::v1::DTYPE_F32, {16, 2}, ub);
    *h.mutable_input()->mutable_factored()->mutable_c() =
        wire::MakeTensorHeader("c", atp::v1::DTYPE_F32, {2, width}, cb);
    h.mutable_lowrank_linear()->set_layer_id("lin");
    SmallCalls(*stub, h, {uc.begin(), uc.begin() + 32}, calls, &lin_us, &lin_worker_us,
               std::vector<float>(uc.begin() + 32, uc.end()));
  }
  {
    std::vector<float> x(16 * 16);
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    for (float& v : x) v = normal(rng);
    const auto xb = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(x.data()), x.size() * 4);
    atp::v1::RequestHeader h;
    *h.mutable_input()->mutable_dense() =
        wire::MakeTensorHeader("x", atp::v1::DTYPE_F32, {16, 16}, xb);
    h.mutable_atp_attention()->set_layer_id("attn");
    h.mutable_atp_attention()->mutable_rank()->set_fixed(4);
    SmallCalls(*stub, h, x, calls, &atp_us, &atp_worker_us);
    h.mutable_decompose()->mutable_rank()->set_fixed(2);
    SmallCalls(*stub, h, x, calls, &decompose_us, &decompose_worker_us);
  }
  std::printf("\n2. Small call round trip over %d calls (after %d warm-up calls)   median    p99\n",
              calls, calls / 10);
  std::printf("   %-58s %6.0f µs %6.0f µs  (anchor)\n", "raw TCP ping-pong, 1 KiB", Median(tcp_us),
              Percentile(tcp_us, 0.99));
  std::printf("   %-58s %6.0f µs %6.0f µs\n", "GetServerInfo (unary)", Median(info_us),
              Percentile(info_us, 0.99));
  std::printf("   %-58s %6.0f µs %6.0f µs\n",
              "lowrank_linear, u [16,2] c [2,64] -> y [16,64], open stream", Median(lin_us),
              Percentile(lin_us, 0.99));
  std::printf("   %-58s %6.0f µs %6.0f µs\n",
              "  of which on the worker (header in to compute done)", Median(lin_worker_us),
              Percentile(lin_worker_us, 0.99));
  std::printf("   %-58s %6.0f µs %6.0f µs\n",
              "ATP attention, x [16,16] f32, r = 4 (1 output), open stream", Median(atp_us),
              Percentile(atp_us, 0.99));
  std::printf("   %-58s %6.0f µs %6.0f µs\n",
              "  of which on the worker (header in to compute done)", Median(atp_worker_us),
              Percentile(atp_worker_us, 0.99));
  std::printf("   %-58s %6.0f µs %6.0f µs\n",
              "decompose, x [16,16] f32, r = 2 (3 outputs), open stream", Median(decompose_us),
              Percentile(decompose_us, 0.99));
  std::printf("   %-58s %6.0f µs %6.0f µs\n",
              "  of which on the worker (header in to compute done)", Median(decompose_worker_us),
              Percentile(decompose_worker_us, 0.99));
  ::kill(worker_pid, SIGTERM);
  int status = 0;
  ::waitpid(worker_pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
