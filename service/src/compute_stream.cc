#include "compute_stream.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "atp/wire/chunking.h"
#include "atp/wire/crc32c.h"
#include "atp/wire/status.h"
#include "atp/wire/stream_codec.h"
#include "grpc_util.h"
#include "log.h"

namespace atp::service {
namespace {

// Ids of refused requests whose chunks are dropped silently (a client may keep sending a refused
// request's payload until it reads the refusal). Oldest forgotten first.
constexpr size_t kMaxDiscardedIds = 1024;

uint64_t Micros(absl::Duration d) {
  return d <= absl::ZeroDuration() ? 0 : static_cast<uint64_t>(absl::ToInt64Microseconds(d));
}

double Seconds(absl::Time from, absl::Time to) {
  if (from == absl::InfinitePast() || to == absl::InfinitePast() || to < from) return 0;
  return absl::ToDoubleSeconds(to - from);
}

std::optional<Op> OpOf(const atp::v1::RequestHeader& h) {
  switch (h.op_case()) {
    case atp::v1::RequestHeader::kAtpAttention:
      return Op::kAtpAttention;
    case atp::v1::RequestHeader::kExactAttention:
      return Op::kExactAttention;
    case atp::v1::RequestHeader::kLowrankLinear:
      return Op::kLowRankLinear;
    case atp::v1::RequestHeader::kDecompose:
      return Op::kDecompose;
    default:
      return std::nullopt;
  }
}

// An input buffer: taken from the payload pool at admission and left uninitialised, since the
// chunks overwrite every byte (a zero-filled kernels::Tensor would touch the memory twice).
struct InputBuffer {
  PooledBuffer bytes;
  kernels::TensorView view;
};

struct Request {
  enum class State { kReceiving, kQueued, kReady };

  uint64_t id = 0;
  std::optional<Op> op;
  ComputePlan plan;
  std::shared_ptr<const LayerEntry> layer;
  std::vector<InputBuffer> inputs;
  std::optional<wire::TensorAssembler> assembler;
  uint64_t input_bytes = 0;
  uint64_t received_bytes = 0;
  // Bytes held in the worker's in-flight budget, and whether a request slot is held.
  uint64_t reserved_bytes = 0;
  bool admitted = false;

  absl::Time header_time = absl::InfinitePast();
  absl::Time input_done = absl::InfinitePast();
  absl::Time compute_start = absl::InfinitePast();
  absl::Time compute_end = absl::InfinitePast();
  absl::Time first_write = absl::InfinitePast();
  absl::Time deadline = absl::InfiniteFuture();
  bool own_deadline = false;  // the deadline comes from timeout_ms, not the stream's

  State state = State::kReceiving;
  absl::Status status;
  ComputeOutput output;
  std::vector<uint32_t> crcs;

  // Response progress.
  bool header_sent = false;
  size_t out_index = 0;
  uint64_t out_offset = 0;
  uint64_t bytes_out = 0;
  bool retired = false;
};

class ComputeStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                            public DrainableCall,
                            public std::enable_shared_from_this<ComputeStream> {
 public:
  ComputeStream(WorkerCore* core, CallTracker* tracker, grpc::CallbackServerContext* context)
      : core_(core), tracker_(tracker), context_(context) {
    stream_deadline_ = absl::FromChrono(context->deadline());
  }

  void Start(std::shared_ptr<ComputeStream> self) {
    absl::MutexLock lock(&mu_);
    self_ = std::move(self);
    tracker_id_ = tracker_->Add(self_);
    absl::Status auth = CheckCallToken(core_->token, context_);
    if (!auth.ok()) {
      FinishLocked(auth);
      return;
    }
    if (core_->draining.load()) {
      FinishLocked(absl::UnavailableError(
          "the worker is draining (shutting down); open the stream on another worker"));
      return;
    }
    StartRead(&read_buf_);
  }

  void OnDrain() override {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    AdvanceLocked();
  }

  void OnStop() override {
    absl::MutexLock lock(&mu_);
    AbandonLocked();
    if (!finished_) {
      finished_ = true;
      finish_code_ = absl::StatusCode::kUnavailable;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the worker is shutting down and its drain timeout ran out"));
    }
  }

  void OnSweep(absl::Time now) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    std::vector<uint64_t> expired;
    for (const auto& [id, req] : receiving_) {
      if (now >= req->deadline) expired.push_back(id);
    }
    for (uint64_t id : expired) {
      std::shared_ptr<Request> req = receiving_[id];
      receiving_.erase(id);
      FailLocked(*req, CheckAliveAt(*req, "while waiting for its input", now));
      DiscardLocked(id);
    }
    if (!expired.empty()) AdvanceLocked();
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (!ok) {
      // The client half-closed (or the call is going away: OnCancel says so).
      read_closed_ = true;
      FailReceivingLocked([](const Request& r) {
        return absl::InvalidArgumentError(
            absl::StrCat("request ", r.id, ": the stream ended before its input was complete: ",
                         r.assembler->MissingStatus().message()));
      });
      AdvanceLocked();
      return;
    }
    ++messages_read_;
    ReceivedBytes bytes;
    wire::DecodedStreamMessage msg;
    absl::Status s = ReadBuffer(&read_buf_, &bytes);
    if (s.ok()) s = wire::DecodeStreamMessage(bytes.pieces, &msg);
    if (!s.ok()) {
      StreamErrorLocked(absl::InvalidArgumentError(
          absl::StrCat("message ", messages_read_,
                       " of the Compute stream is not an atp.v1.ComputeRequest: ", s.message())));
    } else if (msg.kind == wire::DecodedStreamMessage::Kind::kHeader) {
      atp::v1::RequestHeader header;
      if (!header.ParseFromString(msg.header)) {
        StreamErrorLocked(absl::InvalidArgumentError(
            absl::StrCat("message ", messages_read_,
                         " of the Compute stream has a header that is not a valid "
                         "atp.v1.RequestHeader")));
      } else {
        HandleHeaderLocked(header);
      }
    } else if (msg.kind == wire::DecodedStreamMessage::Kind::kChunk) {
      HandleChunkLocked(msg.chunk);
    } else {
      StreamErrorLocked(absl::InvalidArgumentError(absl::StrCat(
          "message ", messages_read_, " of the Compute stream sets neither header nor chunk")));
    }
    read_buf_.Clear();
    if (!read_closed_ && !finished_) StartRead(&read_buf_);
    AdvanceLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) AbandonLocked();
    AdvanceLocked();
  }

  void OnCancel() override {
    cancelled_.store(true);
    absl::MutexLock lock(&mu_);
    AbandonLocked();
    AdvanceLocked();
  }

  void OnDone() override {
    std::shared_ptr<ComputeStream> self;
    absl::StatusCode code;
    {
      absl::MutexLock lock(&mu_);
      code = finish_code_;
      for (auto& r : order_) {
        if (r->state != Request::State::kQueued) RetireLocked(*r, /*answered=*/false);
      }
      order_.clear();
      receiving_.clear();
      self = std::move(self_);
    }
    core_->stats->RecordRpc("Compute", code);
    tracker_->Remove(tracker_id_);
    // `self` goes last; executor tasks may still hold the stream until they return.
  }

 private:
  // ---- admission -------------------------------------------------------------------------------

  void HandleHeaderLocked(const atp::v1::RequestHeader& header) {
    if (order_.size() >= MaxUnanswered()) {
      StreamErrorLocked(absl::ResourceExhaustedError(absl::StrCat(
          "more than ", MaxUnanswered(),
          " requests are unanswered on this stream; read responses before sending more")));
      return;
    }
    auto req = std::make_shared<Request>();
    req->id = header.request_id();
    req->op = OpOf(header);
    req->header_time = absl::Now();
    discarding_.erase(req->id);
    order_.push_back(req);
    absl::Status s = AdmitLocked(header, *req);
    if (!s.ok()) {
      if (LogEnabled(LogLevel::kDebug)) {
        Log(LogLevel::kDebug, "request refused",
            {{"peer", context_->peer()},
             {"request_id", req->id},
             {"code", wire::StatusCodeName(s.code())},
             {"error", std::string(s.message())}});
      }
      FailLocked(*req, s);
      DiscardLocked(req->id);
      return;
    }
    receiving_[req->id] = req;
  }

  absl::Status AdmitLocked(const atp::v1::RequestHeader& header, Request& req) {
    for (const auto& other : order_) {
      if (other.get() != &req && other->id == req.id) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request_id ", req.id, " is already in flight on this stream; use unique ids"));
      }
    }
    if (admitted_ >= core_->limits.max_inflight_per_stream) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the stream has ", admitted_,
                       " requests in flight, the limit (max_inflight_per_stream)"));
    }
    if (core_->draining.load()) {
      return absl::FailedPreconditionError(
          "the worker is draining (shutting down); send the request to another worker");
    }
    if (!core_->backend_healthy.load()) {
      return absl::FailedPreconditionError(
          "the worker's backend is unhealthy; send the request to another worker");
    }
    auto plan = ToComputePlan(header, core_->limits);
    if (!plan.ok()) return plan.status();
    req.plan = *std::move(plan);
    if (req.plan.op != Op::kDecompose) {
      auto layer = core_->registry->Get(req.plan.layer_id);
      if (!layer.ok()) return layer.status();
      req.layer = *std::move(layer);
    }
    auto out_bytes = AdmitPlan(req.plan, req.layer ? &req.layer->spec() : nullptr, core_->limits);
    if (!out_bytes.ok()) return out_bytes.status();
    if (core_->executor->queue_depth() >= core_->max_queue_depth) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the executor queue is full (", core_->max_queue_depth,
                       " requests wait for the backend); retry later or on another worker"));
    }
    for (const auto& t : req.plan.inputs) req.input_bytes += t.byte_size;
    const uint64_t need = req.input_bytes + *out_bytes;
    if (absl::Status s = core_->inflight.Admit(need); !s.ok()) return s;
    req.admitted = true;
    req.reserved_bytes = need;
    ++admitted_;

    std::vector<wire::TensorAssembler::Target> targets;
    req.inputs.reserve(req.plan.inputs.size());
    for (const auto& t : req.plan.inputs) {
      InputBuffer& in = req.inputs.emplace_back();
      in.bytes = core_->payload_pool.Acquire(t.byte_size);
      in.view = kernels::TensorView{static_cast<kernels::DType>(t.dtype), t.shape, in.bytes.data()};
      targets.push_back({req.plan.factored_input ? (req.inputs.size() == 1 ? "u" : "c") : "x",
                         absl::MakeSpan(in.bytes.data(), t.byte_size), t.crc32c});
    }
    req.assembler.emplace(std::move(targets), core_->limits.chunk_bytes);
    req.deadline = stream_deadline_;
    if (req.plan.timeout_ms > 0) {
      const absl::Time own = req.header_time + absl::Milliseconds(req.plan.timeout_ms);
      if (own < req.deadline) {
        req.deadline = own;
        req.own_deadline = true;
      }
    }
    return absl::OkStatus();
  }

  // ---- input -----------------------------------------------------------------------------------

  void HandleChunkLocked(const wire::DecodedChunk& chunk) {
    auto it = receiving_.find(chunk.request_id);
    if (it == receiving_.end()) {
      if (discarding_.contains(chunk.request_id)) return;  // payload of a refused request
      StreamErrorLocked(absl::InvalidArgumentError(
          absl::StrCat("message ", messages_read_, " is a chunk for request_id ", chunk.request_id,
                       ", which is not awaiting input on this stream (send its header first)")));
      return;
    }
    std::shared_ptr<Request> req = it->second;
    absl::Status s = CheckAlive(*req, "while receiving its input");
    if (s.ok()) s = req->assembler->Add(chunk.tensor_index, chunk.offset, chunk.data);
    req->received_bytes = req->assembler->bytes_received();
    if (!s.ok()) {
      receiving_.erase(it);
      if (s.code() == absl::StatusCode::kInvalidArgument ||
          s.code() == absl::StatusCode::kResourceExhausted) {
        s = absl::Status(s.code(), absl::StrCat("request ", req->id, ": ", s.message()));
      }
      FailLocked(*req, s);
      DiscardLocked(req->id);
      return;
    }
    if (!req->assembler->complete()) return;
    receiving_.erase(it);
    req->assembler.reset();
    req->input_done = absl::Now();
    req->state = Request::State::kQueued;
    ++tasks_;
    absl::Status submitted = core_->executor->Submit(
        [self = shared_from_this(), req](kernels::Backend& backend) { self->Run(backend, req); });
    if (!submitted.ok()) {
      --tasks_;
      req->state = Request::State::kReceiving;  // so FailLocked treats it as idle
      FailLocked(*req, submitted);
    }
  }

  // ---- compute (executor thread) -------------------------------------------------------------

  void Run(kernels::Backend& backend, const std::shared_ptr<Request>& req) {
    req->compute_start = absl::Now();
    kernels::ExecContext ctx;
    ctx.check = [this, r = req.get()] { return CheckAlive(*r, "while computing"); };
    absl::Status status = CheckAlive(*req, "while queued");
    ComputeOutput output;
    std::vector<uint32_t> crcs;
    if (status.ok()) {
      std::vector<kernels::TensorView> views;
      for (const InputBuffer& in : req->inputs) views.push_back(in.view);
      auto result = RunPlan(backend, req->layer ? req->layer->handle.get() : nullptr, req->plan,
                            views, core_->limits, ctx);
      if (result.ok()) {
        output = *std::move(result);
        for (const NamedTensor& t : output.outputs) {
          crcs.push_back(wire::Crc32c(t.tensor.data(), t.tensor.byte_size()));
        }
      } else {
        status = result.status();
      }
    }
    req->compute_end = absl::Now();
    req->inputs.clear();
    req->inputs.shrink_to_fit();
    uint64_t out_bytes = 0;
    for (const NamedTensor& t : output.outputs) out_bytes += t.tensor.byte_size();

    absl::MutexLock lock(&mu_);
    --tasks_;
    // Return the inputs and the unused part of the output estimate to the budget now.
    if (req->admitted && req->reserved_bytes > out_bytes) {
      core_->inflight.ReleaseBytes(req->reserved_bytes - out_bytes);
      req->reserved_bytes = out_bytes;
    }
    req->status = std::move(status);
    req->output = std::move(output);
    req->crcs = std::move(crcs);
    req->state = Request::State::kReady;
    if (finished_ || broken_) {
      RetireLocked(*req, /*answered=*/false);
      return;
    }
    AdvanceLocked();
  }

  absl::Status CheckAlive(const Request& r, absl::string_view phase) const {
    return CheckAliveAt(r, phase, absl::Now());
  }

  absl::Status CheckAliveAt(const Request& r, absl::string_view phase, absl::Time now) const {
    if (cancelled_.load()) {
      return absl::CancelledError(
          absl::StrCat("request ", r.id, ": the client cancelled the stream ", phase));
    }
    if (core_->stopping.load()) {
      return absl::CancelledError(absl::StrCat(
          "request ", r.id, ": the worker is shutting down and its drain timeout ran out ", phase));
    }
    if (now >= r.deadline) {
      if (r.own_deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "request ", r.id, " ran past its timeout_ms of ", r.plan.timeout_ms, " ", phase));
      }
      return absl::DeadlineExceededError(
          absl::StrCat("request ", r.id, ": the stream's deadline passed ", phase));
    }
    return absl::OkStatus();
  }

  // ---- output ----------------------------------------------------------------------------------

  // Writes the next message if none is in flight and finishes the stream when nothing is left to
  // do. A request is retired (its slot and budget returned) as soon as its last message is handed
  // to gRPC: a client that waits for each answer must never find its previous request still
  // counted. The last message's bytes stay alive through the slice that references them.
  void AdvanceLocked() {
    if (finished_) return;
    if (!write_in_flight_ && !broken_ && !order_.empty() &&
        order_.front()->state == Request::State::kReady) {
      std::shared_ptr<Request> req = order_.front();
      bool last = false;
      if (!req->header_sent) {
        TimingRecord timing;
        timing.receive_us = Micros(req->input_done - req->header_time);
        timing.queue_us = Micros(req->compute_start - req->input_done);
        timing.compute_us = Micros(req->compute_end - req->compute_start);
        atp::v1::ComputeResponse response;
        *response.mutable_header() = MakeResponseHeader(
            req->id, req->status, req->status.ok() ? &req->output : nullptr, req->crcs, timing);
        write_buf_ = SerializeToBuffer(response);
        req->header_sent = true;
        req->first_write = absl::Now();
        last = !req->status.ok() || req->output.outputs.empty();
      } else {
        const kernels::Tensor& t = req->output.outputs[req->out_index].tensor;
        const uint64_t size = t.byte_size();
        const uint64_t len = std::min<uint64_t>(
            std::max<uint32_t>(req->plan.response_chunk_bytes, 1), size - req->out_offset);
        write_buf_ = ChunkBuffer(req, req->out_index, req->out_offset, len);
        req->bytes_out += len;
        req->out_offset += len;
        if (req->out_offset == size) {
          ++req->out_index;
          req->out_offset = 0;
        }
        last = req->out_index == req->output.outputs.size();
      }
      // No buffer hint even for small responses: with the callback API a hinted write may not
      // complete until a later write, and the next write waits for this one's completion.
      StartWriteLocked();
      if (last) {
        order_.pop_front();
        RetireLocked(*req, /*answered=*/true);
      }
    }
    if (write_in_flight_) return;
    if (broken_) {
      FinishLocked(absl::CancelledError("the stream was cancelled or broken"));
    } else if (order_.empty()) {
      if (!stream_status_.ok()) {
        FinishLocked(stream_status_);
      } else if (read_closed_) {
        FinishLocked(absl::OkStatus());
      } else if (draining_) {
        FinishLocked(absl::UnavailableError(
            "the worker is draining (shutting down); open the stream on another worker"));
      }
    }
  }

  // A chunk message whose data is sent straight from the output tensor: the slice keeps the
  // request (and so the tensor) alive until gRPC has sent it.
  static grpc::ByteBuffer ChunkBuffer(const std::shared_ptr<Request>& req, size_t index,
                                      uint64_t offset, uint64_t len) {
    const kernels::Tensor& t = req->output.outputs[index].tensor;
    grpc::Slice slices[2] = {
        grpc::Slice(wire::EncodeChunkPrefix(req->id, static_cast<uint32_t>(index), offset, len)),
        grpc::Slice(
            static_cast<uint8_t*>(const_cast<void*>(t.data())) + offset, len,
            [](void* holder) { delete static_cast<std::shared_ptr<Request>*>(holder); },
            new std::shared_ptr<Request>(req))};
    return grpc::ByteBuffer(slices, 2);
  }

  void StartWriteLocked() {
    write_in_flight_ = true;
    StartWrite(&write_buf_);
  }

  void FinishLocked(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    finish_code_ = status.code();
    if (!status.ok() && status.code() != absl::StatusCode::kCancelled &&
        status.code() != absl::StatusCode::kUnavailable) {
      Log(LogLevel::kInfo, "compute stream failed",
          {{"peer", context_->peer()},
           {"code", wire::StatusCodeName(status.code())},
           {"error", std::string(status.message())}});
    }
    Finish(wire::ToGrpcStatus(status));
  }

  // ---- failure paths ---------------------------------------------------------------------------

  // Answers `req` in-band with `status` (in its place in the order).
  void FailLocked(Request& req, const absl::Status& status) {
    req.status = status;
    req.state = Request::State::kReady;
    req.assembler.reset();
    req.inputs.clear();
    req.inputs.shrink_to_fit();
  }

  template <typename MakeStatus>
  void FailReceivingLocked(MakeStatus make_status) {
    for (auto& [id, req] : receiving_) FailLocked(*req, make_status(*req));
    receiving_.clear();
  }

  // The stream itself is broken by the client: stop reading, answer what is complete, then finish
  // with `status`.
  void StreamErrorLocked(const absl::Status& status) {
    if (stream_status_.ok()) stream_status_ = status;
    read_closed_ = true;
    FailReceivingLocked([&status](const Request& r) {
      return absl::Status(status.code(), absl::StrCat("request ", r.id,
                                                      " was still receiving its input when the "
                                                      "stream failed: ",
                                                      status.message()));
    });
  }

  // Nothing more can be written (cancelled, or a write failed): drop every request that is not
  // computing; those computing retire when their task returns.
  void AbandonLocked() {
    broken_ = true;
    read_closed_ = true;
    receiving_.clear();
    std::deque<std::shared_ptr<Request>> keep;
    for (auto& r : order_) {
      if (r->state == Request::State::kQueued) {
        keep.push_back(r);
      } else {
        RetireLocked(*r, /*answered=*/false);
      }
    }
    order_.swap(keep);
  }

  void DiscardLocked(uint64_t id) {
    if (discarding_.insert(id).second) {
      discard_order_.push_back(id);
      if (discard_order_.size() > kMaxDiscardedIds) {
        discarding_.erase(discard_order_.front());
        discard_order_.pop_front();
      }
    }
  }

  // Ends a request's accounting exactly once: its slot and bytes in the budget, its statistics.
  void RetireLocked(Request& r, bool answered) {
    if (r.retired) return;
    r.retired = true;
    if (r.admitted) {
      core_->inflight.Release(r.reserved_bytes);
      r.reserved_bytes = 0;
      --admitted_;
    }
    const absl::StatusCode code = answered ? r.status.code() : absl::StatusCode::kCancelled;
    if (!r.op.has_value()) {
      core_->stats->RecordError(code);
      return;
    }
    RequestRecord record;
    record.op = *r.op;
    record.code = code;
    record.bytes_in = r.received_bytes;
    record.bytes_out = r.bytes_out;
    record.receive_seconds = Seconds(r.header_time, r.input_done);
    record.queue_seconds = Seconds(r.input_done, r.compute_start);
    record.compute_seconds = Seconds(r.compute_start, r.compute_end);
    record.send_seconds = answered ? Seconds(r.first_write, absl::Now()) : 0;
    core_->stats->Record(record);
  }

  size_t MaxUnanswered() const {
    return 4 * static_cast<size_t>(core_->limits.max_inflight_per_stream) + 64;
  }

  WorkerCore* const core_;
  CallTracker* const tracker_;
  grpc::CallbackServerContext* const context_;
  absl::Time stream_deadline_;
  std::atomic<bool> cancelled_{false};

  // Only the reading side touches read_buf_ (one read at a time).
  grpc::ByteBuffer read_buf_;

  absl::Mutex mu_;
  std::shared_ptr<ComputeStream> self_ ABSL_GUARDED_BY(mu_);
  uint64_t tracker_id_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ByteBuffer write_buf_ ABSL_GUARDED_BY(mu_);
  // Every request not yet answered, in arrival order (admitted or refused).
  std::deque<std::shared_ptr<Request>> order_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::shared_ptr<Request>> receiving_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> discarding_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> discard_order_ ABSL_GUARDED_BY(mu_);
  int admitted_ ABSL_GUARDED_BY(mu_) = 0;
  int tasks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t messages_read_ ABSL_GUARDED_BY(mu_) = 0;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusCode finish_code_ ABSL_GUARDED_BY(mu_) = absl::StatusCode::kOk;
  absl::Status stream_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StartComputeStream(
    WorkerCore* core, CallTracker* tracker, grpc::CallbackServerContext* context) {
  auto stream = std::make_shared<ComputeStream>(core, tracker, context);
  ComputeStream* raw = stream.get();
  raw->Start(std::move(stream));
  return raw;
}

}  // namespace atp::service
