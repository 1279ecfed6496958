#include "worker_service.h"

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "atp/wire/chunking.h"
#include "atp/wire/layer_digest.h"
#include "atp/wire/status.h"
#include "atp/wire/stream_codec.h"
#include "compute_stream.h"
#include "grpc_util.h"
#include "log.h"

namespace atp::service {
namespace {

// Finishes a unary call with `status`, counting it.
grpc::ServerUnaryReactor* FinishUnary(WorkerCore* core, grpc::CallbackServerContext* context,
                                      absl::string_view method, const absl::Status& status) {
  core->stats->RecordRpc(method, status.code());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(wire::ToGrpcStatus(status));
  return reactor;
}

// One RegisterLayer upload: the header, then the chunks of every tensor in order; the digest and
// the load into the backend run on the executor.
class RegisterUpload final : public grpc::ServerReadReactor<grpc::ByteBuffer>,
                             public DrainableCall,
                             public std::enable_shared_from_this<RegisterUpload> {
 public:
  RegisterUpload(WorkerCore* core, CallTracker* tracker, grpc::CallbackServerContext* context,
                 grpc::ByteBuffer* response)
      : core_(core), tracker_(tracker), context_(context), response_(response) {}

  void Start(std::shared_ptr<RegisterUpload> self) {
    absl::MutexLock lock(&mu_);
    self_ = std::move(self);
    tracker_id_ = tracker_->Add(self_);
    start_ = absl::Now();
    if (absl::Status s = CheckCallToken(core_->token, context_); !s.ok()) {
      FinishLocked(s);
      return;
    }
    if (core_->draining.load()) {
      FinishLocked(absl::UnavailableError(
          "the worker is draining (shutting down); register the layer on another worker"));
      return;
    }
    StartRead(&read_buf_);
  }

  // An upload in progress is allowed to complete; its call ends by itself.
  void OnDrain() override {}

  void OnStop() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(
        absl::UnavailableError("the worker is shutting down and its drain timeout ran out"));
  }

  // An upload has only its stream's deadline, which gRPC enforces.
  void OnSweep(absl::Time) override {}

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (!ok) {
      if (state_ == State::kHeader) {
        FinishLocked(
            absl::InvalidArgumentError("the RegisterLayer stream ended before its LayerHeader"));
      } else if (state_ == State::kReceiving) {
        FinishLocked(
            absl::InvalidArgumentError(absl::StrCat("layer \"", plan_.layer_id,
                                                    "\": the stream ended before every tensor "
                                                    "was sent: ",
                                                    assembler_->MissingStatus().message())));
      }
      return;  // kLoading: the executor finishes the call
    }
    ++messages_read_;
    ReceivedBytes bytes;
    wire::DecodedStreamMessage msg;
    absl::Status s = ReadBuffer(&read_buf_, &bytes);
    if (s.ok()) s = wire::DecodeStreamMessage(bytes.pieces, &msg);
    if (!s.ok()) {
      FinishLocked(absl::InvalidArgumentError(absl::StrCat(
          "message ", messages_read_,
          " of the RegisterLayer stream is not an atp.v1.RegisterLayerRequest: ", s.message())));
      return;
    }
    if (state_ == State::kHeader) {
      if (msg.kind != wire::DecodedStreamMessage::Kind::kHeader) {
        FinishLocked(absl::InvalidArgumentError(
            "the first message of a RegisterLayer stream must be a LayerHeader"));
        return;
      }
      atp::v1::LayerHeader header;
      if (!header.ParseFromString(msg.header)) {
        FinishLocked(absl::InvalidArgumentError(
            "the first message of the RegisterLayer stream is not a valid atp.v1.LayerHeader"));
        return;
      }
      if (absl::Status h = HandleHeaderLocked(header); !h.ok()) {
        FinishLocked(h);
        return;
      }
    } else if (state_ == State::kReceiving) {
      if (msg.kind != wire::DecodedStreamMessage::Kind::kChunk) {
        FinishLocked(absl::InvalidArgumentError(
            absl::StrCat("layer \"", plan_.layer_id, "\": message ", messages_read_,
                         " is not a chunk; a RegisterLayer stream has one header, then chunks")));
        return;
      }
      absl::Status c = assembler_->Add(msg.chunk.tensor_index, msg.chunk.offset, msg.chunk.data);
      if (!c.ok()) {
        FinishLocked(
            absl::Status(c.code(), absl::StrCat("layer \"", plan_.layer_id, "\": ", c.message())));
        return;
      }
      if (assembler_->complete()) {
        SubmitLocked();
        return;
      }
    } else {
      return;  // extra messages after the last tensor are ignored
    }
    read_buf_.Clear();
    StartRead(&read_buf_);
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    FinishLocked(absl::CancelledError("the client cancelled the upload"));
  }

  void OnDone() override {
    std::shared_ptr<RegisterUpload> self;
    absl::StatusCode code;
    {
      absl::MutexLock lock(&mu_);
      self = std::move(self_);
      code = finish_code_;
    }
    core_->stats->RecordRpc("RegisterLayer", code);
    tracker_->Remove(tracker_id_);
  }

 private:
  enum class State { kHeader, kReceiving, kLoading };

  absl::Status HandleHeaderLocked(const atp::v1::LayerHeader& header) {
    auto plan = ToLayerPlan(header, core_->limits);
    if (!plan.ok()) return plan.status();
    plan_ = *std::move(plan);
    auto existing = core_->registry->Find(plan_.layer_id);
    if (existing != nullptr && !plan_.claimed_digest.empty()) {
      if (existing->digest == plan_.claimed_digest) {
        // The client may stop sending: answer right after the header.
        ReplyLocked(*existing, /*already_registered=*/true);
        return absl::OkStatus();
      }
      if (!plan_.replace) {
        return absl::AlreadyExistsError(absl::StrCat(
            "layer \"", plan_.layer_id, "\" is registered with digest ", existing->digest,
            " and this upload has digest ", plan_.claimed_digest, "; set replace to swap it"));
      }
    }
    auto reservation = core_->registry->Reserve(plan_.payload_bytes, plan_.layer_id);
    if (!reservation.ok()) return reservation.status();
    reservation_ = *std::move(reservation);
    std::vector<wire::TensorAssembler::Target> targets;
    tensors_.reserve(plan_.tensors.size());
    for (const auto& t : plan_.tensors) {
      tensors_.emplace_back(static_cast<kernels::DType>(t.dtype), t.shape);
      kernels::Tensor& tensor = tensors_.back();
      targets.push_back({t.name,
                         absl::MakeSpan(static_cast<uint8_t*>(tensor.data()), tensor.byte_size()),
                         t.crc32c});
    }
    assembler_.emplace(std::move(targets), core_->limits.chunk_bytes);
    state_ = State::kReceiving;
    return absl::OkStatus();
  }

  void SubmitLocked() {
    state_ = State::kLoading;
    received_ = absl::Now();
    assembler_.reset();
    absl::Status s = core_->executor->Submit(
        [self = shared_from_this()](kernels::Backend& backend) { self->Load(backend); });
    if (!s.ok()) FinishLocked(s);
  }

  // On the executor: digest, load into the backend, insert into the registry.
  void Load(kernels::Backend& backend) {
    const absl::Time start = absl::Now();
    absl::Status status;
    std::shared_ptr<const LayerEntry> entry;
    bool already = false;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
    }
    std::vector<wire::DigestTensor> digest_tensors;
    for (size_t i = 0; i < plan_.tensors.size(); ++i) {
      const auto& t = plan_.tensors[i];
      digest_tensors.push_back({t.name, t.dtype, t.shape,
                                absl::MakeConstSpan(static_cast<const uint8_t*>(tensors_[i].data()),
                                                    tensors_[i].byte_size())});
    }
    const std::string digest = wire::LayerDigest(digest_tensors, plan_.digest_config);
    auto existing = core_->registry->Find(plan_.layer_id);
    if (!plan_.claimed_digest.empty() && plan_.claimed_digest != digest) {
      status = absl::InvalidArgumentError(
          absl::StrCat("layer \"", plan_.layer_id, "\": the header claims digest ",
                       plan_.claimed_digest, " but the content has digest ", digest));
    } else if (existing != nullptr && existing->digest == digest) {
      entry = existing;
      already = true;
    } else if (existing != nullptr && !plan_.replace) {
      status = absl::AlreadyExistsError(absl::StrCat(
          "layer \"", plan_.layer_id, "\" is registered with digest ", existing->digest,
          " and this upload has digest ", digest, "; set replace to swap it"));
    } else {
      kernels::LayerSpec spec = std::move(plan_.spec);
      for (size_t i = 0; i < plan_.tensors.size(); ++i) {
        spec.weights.emplace(plan_.tensors[i].name, std::move(tensors_[i]));
      }
      tensors_.clear();
      auto handle = backend.LoadLayer(std::move(spec));
      if (!handle.ok()) {
        status = absl::Status(
            handle.status().code(),
            absl::StrCat("layer \"", plan_.layer_id, "\": ", handle.status().message()));
      } else {
        auto e = std::make_unique<LayerEntry>();
        e->id = plan_.layer_id;
        e->digest = digest;
        e->tensors = plan_.tensors;
        // A backend that cannot tell its footprint is charged the payload size.
        e->resident_bytes =
            (*handle)->resident_bytes() > 0 ? (*handle)->resident_bytes() : plan_.payload_bytes;
        e->handle = *std::move(handle);
        auto inserted =
            core_->registry->Insert(std::move(e), plan_.replace, std::move(reservation_));
        if (!inserted.ok()) {
          status = inserted.status();
        } else {
          entry = inserted->entry;
          already = inserted->already_registered;
        }
      }
    }
    tensors_.clear();
    reservation_ = LayerRegistry::Reservation();
    load_seconds_ = absl::ToDoubleSeconds(absl::Now() - start);
    queue_seconds_ = absl::ToDoubleSeconds(start - received_);
    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      Log(LogLevel::kInfo, already ? "layer already registered" : "layer registered",
          {{"layer_id", plan_.layer_id},
           {"digest", entry->digest},
           {"resident_bytes", entry->resident_bytes}});
      ReplyLocked(*entry, already);
    } else {
      FinishLocked(status);
    }
  }

  void ReplyLocked(const LayerEntry& entry, bool already_registered) {
    atp::v1::RegisterLayerResponse response;
    *response.mutable_layer() = ToLayerInfo(entry);
    response.set_already_registered(already_registered);
    *response_ = SerializeToBuffer(response);
    FinishLocked(absl::OkStatus());
  }

  void FinishLocked(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    finish_code_ = status.code();
    RequestRecord record;
    record.op = Op::kRegisterLayer;
    record.code = status.code();
    record.bytes_in = assembler_ ? assembler_->bytes_received() : plan_.payload_bytes;
    if (state_ == State::kHeader) record.bytes_in = 0;
    record.receive_seconds = received_ > start_ ? absl::ToDoubleSeconds(received_ - start_) : 0;
    record.queue_seconds = queue_seconds_;
    record.compute_seconds = load_seconds_;
    core_->stats->Record(record);
    if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
      Log(LogLevel::kInfo, "layer registration failed",
          {{"peer", context_->peer()},
           {"layer_id", plan_.layer_id},
           {"code", wire::StatusCodeName(status.code())},
           {"error", std::string(status.message())}});
    }
    Finish(wire::ToGrpcStatus(status));
  }

  WorkerCore* const core_;
  CallTracker* const tracker_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const response_;
  grpc::ByteBuffer read_buf_;

  // Touched by the reading side until kLoading, then by the executor task alone.
  LayerPlan plan_;
  std::vector<kernels::Tensor> tensors_;
  std::optional<wire::TensorAssembler> assembler_;
  LayerRegistry::Reservation reservation_;
  absl::Time start_ = absl::InfinitePast();
  absl::Time received_ = absl::InfinitePast();
  double queue_seconds_ = 0;
  double load_seconds_ = 0;

  absl::Mutex mu_;
  std::shared_ptr<RegisterUpload> self_ ABSL_GUARDED_BY(mu_);
  uint64_t tracker_id_ ABSL_GUARDED_BY(mu_) = 0;
  State state_ ABSL_GUARDED_BY(mu_) = State::kHeader;
  uint64_t messages_read_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusCode finish_code_ ABSL_GUARDED_BY(mu_) = absl::StatusCode::kOk;
};

}  // namespace

grpc::ServerUnaryReactor* WorkerService::GetServerInfo(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  if (absl::Status s = CheckCallToken(core_->token, context); !s.ok()) {
    return FinishUnary(core_, context, "GetServerInfo", s);
  }
  atp::v1::GetServerInfoRequest req;
  if (absl::Status s = ParseBuffer(*request, &req, "atp.v1.GetServerInfoRequest"); !s.ok()) {
    return FinishUnary(core_, context, "GetServerInfo", s);
  }
  *response = SerializeToBuffer(ToServerInfo(core_->description, core_->limits));
  return FinishUnary(core_, context, "GetServerInfo", absl::OkStatus());
}

grpc::ServerReadReactor<grpc::ByteBuffer>* WorkerService::RegisterLayer(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  auto upload = std::make_shared<RegisterUpload>(core_, tracker_, context, response);
  RegisterUpload* raw = upload.get();
  raw->Start(std::move(upload));
  return raw;
}

grpc::ServerUnaryReactor* WorkerService::ListLayers(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  if (absl::Status s = CheckCallToken(core_->token, context); !s.ok()) {
    return FinishUnary(core_, context, "ListLayers", s);
  }
  atp::v1::ListLayersRequest req;
  if (absl::Status s = ParseBuffer(*request, &req, "atp.v1.ListLayersRequest"); !s.ok()) {
    return FinishUnary(core_, context, "ListLayers", s);
  }
  atp::v1::ListLayersResponse out;
  uint64_t total = 0;
  for (const auto& entry : core_->registry->List()) {
    *out.add_layers() = ToLayerInfo(*entry);
    total += entry->resident_bytes;
  }
  out.set_resident_bytes(total);
  out.set_max_resident_bytes(core_->registry->max_resident_bytes());
  *response = SerializeToBuffer(out);
  return FinishUnary(core_, context, "ListLayers", absl::OkStatus());
}

grpc::ServerUnaryReactor* WorkerService::RemoveLayer(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  if (absl::Status s = CheckCallToken(core_->token, context); !s.ok()) {
    return FinishUnary(core_, context, "RemoveLayer", s);
  }
  atp::v1::RemoveLayerRequest req;
  if (absl::Status s = ParseBuffer(*request, &req, "atp.v1.RemoveLayerRequest"); !s.ok()) {
    return FinishUnary(core_, context, "RemoveLayer", s);
  }
  if (absl::Status s = ValidateLayerId(req.layer_id()); !s.ok()) {
    return FinishUnary(core_, context, "RemoveLayer", s);
  }
  auto freed = core_->registry->Remove(req.layer_id());
  if (!freed.ok()) return FinishUnary(core_, context, "RemoveLayer", freed.status());
  Log(LogLevel::kInfo, "layer removed", {{"layer_id", req.layer_id()}, {"freed_bytes", *freed}});
  atp::v1::RemoveLayerResponse out;
  out.set_freed_bytes(*freed);
  *response = SerializeToBuffer(out);
  return FinishUnary(core_, context, "RemoveLayer", absl::OkStatus());
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* WorkerService::Compute(
    grpc::CallbackServerContext* context) {
  return StartComputeStream(core_, tracker_, context);
}

grpc::ServerUnaryReactor* WorkerService::GetStatistics(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  if (absl::Status s = CheckCallToken(core_->token, context); !s.ok()) {
    return FinishUnary(core_, context, "GetStatistics", s);
  }
  atp::v1::GetStatisticsRequest req;
  if (absl::Status s = ParseBuffer(*request, &req, "atp.v1.GetStatisticsRequest"); !s.ok()) {
    return FinishUnary(core_, context, "GetStatistics", s);
  }
  StatsSnapshot snapshot = core_->stats->Snapshot();
  snapshot.queue_depth = core_->executor->queue_depth();
  *response = SerializeToBuffer(ToStatistics(snapshot));
  return FinishUnary(core_, context, "GetStatistics", absl::OkStatus());
}

}  // namespace atp::service
