#include "client_core.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "atp/v1/worker.grpc.pb.h"
#include "atp/wire/chunking.h"
#include "atp/wire/crc32c.h"
#include "atp/wire/status.h"
#include "atp/wire/stream_codec.h"
#include "atp/wire/tensor_header.h"
#include "compute_stream.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "live_calls.h"
#include "wire_convert.h"

namespace atp::client::internal {
namespace {

using HealthResponse = grpc::health::v1::HealthCheckResponse;

constexpr char kReadinessService[] = "atp.v1.Worker";

absl::StatusOr<std::string> ReadTextFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", what, " ", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status PrefixStatus(const absl::Status& s, absl::string_view prefix) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

Readiness ToReadiness(HealthResponse::ServingStatus status) {
  switch (status) {
    case HealthResponse::SERVING:
      return Readiness::kServing;
    case HealthResponse::NOT_SERVING:
      return Readiness::kNotServing;
    default:
      return Readiness::kUnknown;
  }
}

void SetupContext(grpc::ClientContext* ctx, absl::Time deadline, bool wait_for_ready,
                  const std::string& authorization) {
  if (deadline != absl::InfiniteFuture()) ctx->set_deadline(absl::ToChronoTime(deadline));
  ctx->set_wait_for_ready(wait_for_ready);
  if (!authorization.empty()) ctx->AddMetadata("authorization", authorization);
}

class ClientCoreImpl;

// A unary call through the generated stub's callback API; keeps its own state alive until done.
template <typename Request, typename Response>
class UnaryCall final : public CancellableCall,
                        public std::enable_shared_from_this<UnaryCall<Request, Response>> {
 public:
  using Done = absl::AnyInvocable<void(const grpc::Status&, Response&)>;
  UnaryCall(Request request, Done done) : request_(std::move(request)), done_(std::move(done)) {}

  // `start` calls the stub's async() method with (context, request, response, on_done).
  template <typename StartFn>
  void Start(LiveCalls* live, absl::Time deadline, bool wait_for_ready,
             const std::string& authorization, StartFn start) {
    live_ = live;
    live_id_ = live->Add(this->weak_from_this());
    if (live_id_ == 0) {
      grpc::Status cancelled(grpc::StatusCode::CANCELLED, "the client is shut down");
      done_(cancelled, response_);
      return;
    }
    SetupContext(context_.get(), deadline, wait_for_ready, authorization);
    start(context_.get(), &request_, &response_,
          [self = this->shared_from_this()](grpc::Status status) {
            self->done_(status, self->response_);
          });
  }

  ~UnaryCall() override {
    context_.reset();
    if (live_id_ != 0) live_->Remove(live_id_);
  }

  void Cancel() override { context_->TryCancel(); }

 private:
  std::unique_ptr<grpc::ClientContext> context_ = std::make_unique<grpc::ClientContext>();
  Request request_;
  Response response_;
  Done done_;
  LiveCalls* live_ = nullptr;
  uint64_t live_id_ = 0;
};

// Watches readiness: grpc.health.v1 Watch("atp.v1.Worker"), waiting for the worker to be reachable.
class HealthWatch final : public grpc::ClientReadReactor<HealthResponse>,
                          public CancellableCall,
                          public std::enable_shared_from_this<HealthWatch> {
 public:
  using OnStatus = std::function<void(Readiness)>;
  using OnEnd = std::function<void(const grpc::Status&, bool got_message)>;
  HealthWatch(OnStatus on_status, OnEnd on_end)
      : on_status_(std::move(on_status)), on_end_(std::move(on_end)) {}

  void Start(grpc::health::v1::Health::Stub* stub, LiveCalls* live) {
    live_ = live;
    live_id_ = live->Add(weak_from_this());
    if (live_id_ == 0) return;
    self_ = shared_from_this();
    context_->set_wait_for_ready(true);
    request_.set_service(kReadinessService);
    stub->async()->Watch(context_.get(), &request_, this);
    StartRead(&response_);
    StartCall();
  }

  ~HealthWatch() override {
    context_.reset();
    if (live_id_ != 0) live_->Remove(live_id_);
  }

  void Cancel() override { context_->TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    got_message_ = true;
    on_status_(ToReadiness(response_.status()));
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    on_end_(status, got_message_);
    std::shared_ptr<HealthWatch> self = std::move(self_);
  }

 private:
  OnStatus on_status_;
  OnEnd on_end_;
  std::unique_ptr<grpc::ClientContext> context_ = std::make_unique<grpc::ClientContext>();
  grpc::health::v1::HealthCheckRequest request_;
  HealthResponse response_;
  bool got_message_ = false;
  LiveCalls* live_ = nullptr;
  uint64_t live_id_ = 0;
  std::shared_ptr<HealthWatch> self_;
};

// One RegisterLayer upload on a raw stream: the header, then every tensor's chunks sent straight
// from the spec's weights (each data slice holds a reference to the spec).
class RegisterUpload final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                             public CancellableCall,
                             public std::enable_shared_from_this<RegisterUpload> {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<RegisteredLayer>)>;
  RegisterUpload(LayerSpec spec, std::string target, uint32_t chunk_bytes, Done done)
      : spec_(std::move(spec)),
        target_(std::move(target)),
        chunk_bytes_(std::max<uint32_t>(chunk_bytes, 1)),
        done_(std::move(done)) {}

  void Start(grpc::GenericStub* stub, LiveCalls* live, absl::Time deadline, bool wait_for_ready,
             const std::string& authorization) {
    live_ = live;
    live_id_ = live->Add(weak_from_this());
    if (live_id_ == 0) {
      done_(absl::CancelledError("the client is shut down"));
      return;
    }
    self_ = shared_from_this();
    for (const auto& [name, tensor] : spec_.weights()) order_.push_back(&tensor);
    atp::v1::RegisterLayerRequest request;
    *request.mutable_header() = ToLayerHeader(spec_);
    grpc::Slice slice(request.SerializeAsString());
    write_buf_ = grpc::ByteBuffer(&slice, 1);
    SetupContext(context_.get(), deadline, wait_for_ready, authorization);
    stub->PrepareBidiStreamingCall(context_.get(), kRegisterLayerMethod, grpc::StubOptions(), this);
    StartRead(&read_buf_);
    StartWrite(&write_buf_);
    StartCall();
  }

  ~RegisterUpload() override {
    context_.reset();
    if (live_id_ != 0) live_->Remove(live_id_);
  }

  void Cancel() override { context_->TryCancel(); }

  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the worker answered (or the call failed): OnDone follows
    write_buf_.Clear();
    while (tensor_ < order_.size() && offset_ >= order_[tensor_]->byte_size()) {
      ++tensor_;
      offset_ = 0;
    }
    if (tensor_ >= order_.size()) {
      StartWritesDone();
      return;
    }
    const Tensor& t = *order_[tensor_];
    const uint64_t len = std::min<uint64_t>(chunk_bytes_, t.byte_size() - offset_);
    grpc::Slice slices[2] = {
        grpc::Slice(wire::EncodeChunkPrefix(0, static_cast<uint32_t>(tensor_), offset_, len)),
        grpc::Slice(
            static_cast<uint8_t*>(const_cast<void*>(t.data())) + offset_, len,
            [](void* p) { delete static_cast<LayerSpec*>(p); }, new LayerSpec(spec_))};
    write_buf_ = grpc::ByteBuffer(slices, 2);
    offset_ += len;
    StartWrite(&write_buf_);
  }

  void OnReadDone(bool ok) override { got_response_ = ok; }

  void OnDone(const grpc::Status& status) override {
    absl::StatusOr<RegisteredLayer> result;
    if (!status.ok()) {
      result =
          PrefixStatus(wire::FromGrpcStatus(status),
                       absl::StrCat("worker ", target_, ": registering layer ", spec_.id(), ": "));
    } else {
      atp::v1::RegisterLayerResponse response;
      std::vector<grpc::Slice> slices;
      std::string flat;
      if (got_response_ && read_buf_.Dump(&slices).ok()) {
        for (const grpc::Slice& s : slices) {
          flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
      }
      if (!got_response_ || !response.ParseFromString(flat)) {
        result = absl::InternalError(
            absl::StrCat("worker ", target_, " answered RegisterLayer without a valid response"));
      } else {
        RegisteredLayer layer;
        layer.layer_id = response.layer().layer_id();
        layer.digest = response.layer().digest();
        layer.resident_bytes = response.layer().resident_bytes();
        layer.already_registered = response.already_registered();
        result = std::move(layer);
      }
    }
    done_(std::move(result));
    std::shared_ptr<RegisterUpload> self = std::move(self_);
  }

 private:
  LayerSpec spec_;
  std::string target_;
  uint32_t chunk_bytes_;
  Done done_;
  std::vector<const Tensor*> order_;  // LayerHeader.tensors order (by name)
  size_t tensor_ = 0;
  uint64_t offset_ = 0;
  std::unique_ptr<grpc::ClientContext> context_ = std::make_unique<grpc::ClientContext>();
  grpc::ByteBuffer write_buf_;
  grpc::ByteBuffer read_buf_;
  bool got_response_ = false;
  LiveCalls* live_ = nullptr;
  uint64_t live_id_ = 0;
  std::shared_ptr<RegisterUpload> self_;
};

class ClientCoreImpl final : public ClientCore,
                             public std::enable_shared_from_this<ClientCoreImpl> {
 public:
  ClientCoreImpl(std::string target, const ClientOptions& options, std::string authorization,
                 std::shared_ptr<grpc::Channel> channel, std::shared_ptr<TimerQueue> timer,
                 ReadinessListener listener)
      : target_(std::move(target)),
        options_(options),
        authorization_(std::move(authorization)),
        channel_(std::move(channel)),
        generic_(std::make_unique<grpc::GenericStub>(channel_)),
        stub_(atp::v1::Worker::NewStub(channel_)),
        health_stub_(grpc::health::v1::Health::NewStub(channel_)),
        timer_(std::move(timer)),
        listener_(std::move(listener)) {}

  ~ClientCoreImpl() override { Shutdown(); }

  void StartWatch() {
    if (!options_.watch_health) return;
    // Calls hold the core by raw pointer: it outlives them (Shutdown waits until every call is
    // destroyed), and no call may drop the last reference to it on a gRPC thread.
    auto watch =
        std::make_shared<HealthWatch>([this](Readiness r) { OnWatchStatus(r); },
                                      [this](const grpc::Status& status, bool got_message) {
                                        OnWatchEnded(status, got_message);
                                      });
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      watch_ = watch;
    }
    watch->Start(health_stub_.get(), &live_);
  }

  const std::string& target() const override { return target_; }
  const ClientOptions& options() const override { return options_; }

  Readiness readiness() const override {
    absl::MutexLock lock(&mu_);
    return readiness_;
  }

  std::optional<WorkerLimits> limits() const override {
    absl::MutexLock lock(&mu_);
    return limits_;
  }

  void RefreshHealth() override {
    std::shared_ptr<HealthWatch> watch;
    {
      absl::MutexLock lock(&mu_);
      watch = watch_.lock();
    }
    SetReadiness(Readiness::kUnknown);
    if (watch) watch->Cancel();  // OnWatchEnded restarts it
  }

  void Submit(std::vector<std::unique_ptr<OpCall>> calls) override {
    if (calls.empty()) return;
    std::set<std::string> layer_ids;
    absl::Time deadline = absl::InfinitePast();
    for (const auto& call : calls) {
      if (!call->layer_id.empty()) layer_ids.insert(call->layer_id);
      deadline = std::max(deadline, call->deadline);
    }
    const bool wait = calls.front()->wait_for_ready;
    ClientCoreImpl* self = this;
    Prepare(std::move(layer_ids), deadline, wait,
            [self, calls = std::move(calls)](absl::Status s, bool in_band) mutable {
              if (!s.ok()) {
                for (auto& call : calls) {
                  ++call->attempts;
                  OpOutcome outcome;
                  outcome.status = s;
                  outcome.in_band = in_band;
                  outcome.info.worker = self->target_;
                  CompleteAttempt(std::move(call), std::move(outcome));
                }
                return;
              }
              self->StartStream(std::move(calls));
            });
  }

  void RememberLayer(const LayerSpec& spec) override {
    absl::MutexLock lock(&mu_);
    LayerState& state = layers_[spec.id()];
    if (state.spec.has_value() && state.spec->digest() == spec.digest()) return;
    state.spec = spec;
    state.confirmed = false;
  }

  void ForgetLayer(const std::string& layer_id) override {
    absl::MutexLock lock(&mu_);
    auto it = layers_.find(layer_id);
    if (it != layers_.end() && !it->second.registering) layers_.erase(it);
  }

  bool HasLayer(const std::string& layer_id) const override {
    absl::MutexLock lock(&mu_);
    auto it = layers_.find(layer_id);
    return it != layers_.end() && it->second.spec.has_value();
  }

  bool LayerConfirmed(const std::string& layer_id) const override {
    absl::MutexLock lock(&mu_);
    auto it = layers_.find(layer_id);
    return it != layers_.end() && it->second.confirmed;
  }

  void RegisterLayerAsync(const LayerSpec& spec, absl::Time deadline, bool wait_for_ready,
                          absl::AnyInvocable<void(absl::StatusOr<RegisteredLayer>)> done) override {
    {
      absl::MutexLock lock(&mu_);
      LayerState& state = layers_[spec.id()];
      state.spec = spec;
      state.confirmed = false;
    }
    ClientCoreImpl* self = this;
    // On success the worker holds this content: later calls need not register it first.
    auto confirm = [self, id = spec.id(), digest = spec.digest(),
                    done = std::move(done)](absl::StatusOr<RegisteredLayer> r) mutable {
      if (r.ok()) {
        absl::MutexLock lock(&self->mu_);
        auto it = self->layers_.find(id);
        if (it != self->layers_.end() && it->second.spec.has_value() &&
            it->second.spec->digest() == digest) {
          it->second.confirmed = true;
        }
      }
      done(std::move(r));
    };
    WithLimits(deadline, wait_for_ready,
               [self, spec, deadline, wait_for_ready, confirm = std::move(confirm)](
                   absl::Status s, bool /*in_band*/) mutable {
                 if (!s.ok()) {
                   confirm(s);
                   return;
                 }
                 self->Upload(spec, deadline, wait_for_ready, std::move(confirm));
               });
  }

  void RemoveLayerAsync(const std::string& layer_id, absl::Time deadline,
                        absl::AnyInvocable<void(absl::Status)> done) override {
    ForgetLayer(layer_id);
    atp::v1::RemoveLayerRequest request;
    request.set_layer_id(layer_id);
    auto call =
        std::make_shared<UnaryCall<atp::v1::RemoveLayerRequest, atp::v1::RemoveLayerResponse>>(
            std::move(request), [target = target_, done = std::move(done)](
                                    const grpc::Status& s, atp::v1::RemoveLayerResponse&) mutable {
              done(PrefixStatus(wire::FromGrpcStatus(s), absl::StrCat("worker ", target, ": ")));
            });
    call->Start(&live_, deadline, options_.wait_for_ready, authorization_,
                [this](auto* ctx, auto* req, auto* resp, auto on_done) {
                  stub_->async()->RemoveLayer(ctx, req, resp, std::move(on_done));
                });
  }

  void ListLayersAsync(
      absl::Time deadline,
      absl::AnyInvocable<void(absl::StatusOr<std::vector<RegisteredLayer>>)> done) override {
    auto call =
        std::make_shared<UnaryCall<atp::v1::ListLayersRequest, atp::v1::ListLayersResponse>>(
            atp::v1::ListLayersRequest(),
            [target = target_, done = std::move(done)](const grpc::Status& s,
                                                       atp::v1::ListLayersResponse& r) mutable {
              if (!s.ok()) {
                done(PrefixStatus(wire::FromGrpcStatus(s), absl::StrCat("worker ", target, ": ")));
                return;
              }
              std::vector<RegisteredLayer> layers;
              for (const auto& l : r.layers()) {
                layers.push_back({l.layer_id(), l.digest(), l.resident_bytes(), true});
              }
              done(std::move(layers));
            });
    call->Start(&live_, deadline, options_.wait_for_ready, authorization_,
                [this](auto* ctx, auto* req, auto* resp, auto on_done) {
                  stub_->async()->ListLayers(ctx, req, resp, std::move(on_done));
                });
  }

  void GetServerInfoAsync(absl::Time deadline, bool wait_for_ready,
                          absl::AnyInvocable<void(absl::StatusOr<ServerInfo>)> done) override {
    auto call = std::make_shared<UnaryCall<atp::v1::GetServerInfoRequest, atp::v1::ServerInfo>>(
        atp::v1::GetServerInfoRequest(),
        [target = target_, done = std::move(done)](const grpc::Status& s,
                                                   atp::v1::ServerInfo& info) mutable {
          if (!s.ok()) {
            done(PrefixStatus(wire::FromGrpcStatus(s), absl::StrCat("worker ", target, ": ")));
            return;
          }
          done(FromServerInfo(info));
        });
    call->Start(&live_, deadline, wait_for_ready, authorization_,
                [this](auto* ctx, auto* req, auto* resp, auto on_done) {
                  stub_->async()->GetServerInfo(ctx, req, resp, std::move(on_done));
                });
  }

  void GetStatisticsAsync(
      absl::Time deadline,
      absl::AnyInvocable<void(absl::StatusOr<WorkerStatistics>)> done) override {
    auto call = std::make_shared<UnaryCall<atp::v1::GetStatisticsRequest, atp::v1::Statistics>>(
        atp::v1::GetStatisticsRequest(),
        [target = target_, done = std::move(done)](const grpc::Status& s,
                                                   atp::v1::Statistics& stats) mutable {
          if (!s.ok()) {
            done(PrefixStatus(wire::FromGrpcStatus(s), absl::StrCat("worker ", target, ": ")));
            return;
          }
          done(FromStatistics(stats));
        });
    call->Start(&live_, deadline, options_.wait_for_ready, authorization_,
                [this](auto* ctx, auto* req, auto* resp, auto on_done) {
                  stub_->async()->GetStatistics(ctx, req, resp, std::move(on_done));
                });
  }

  void CheckHealthAsync(const std::string& service, absl::Time deadline, bool wait_for_ready,
                        absl::AnyInvocable<void(absl::StatusOr<Readiness>)> done) override {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    auto call = std::make_shared<UnaryCall<grpc::health::v1::HealthCheckRequest, HealthResponse>>(
        std::move(request), [target = target_, done = std::move(done)](const grpc::Status& s,
                                                                       HealthResponse& r) mutable {
          if (!s.ok()) {
            done(PrefixStatus(wire::FromGrpcStatus(s), absl::StrCat("worker ", target, ": ")));
            return;
          }
          done(ToReadiness(r.status()));
        });
    call->Start(&live_, deadline, wait_for_ready, authorization_,
                [this](auto* ctx, auto* req, auto* resp, auto on_done) {
                  health_stub_->async()->Check(ctx, req, resp, std::move(on_done));
                });
  }

  void Shutdown() override {
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      shutdown_ = true;
    }
    if (!live_.CloseAndWait(absl::Seconds(60))) {
      // A call still holds this core after a minute (gRPC keeps one of its slices on a connection
      // that never drains). Its callbacks use this object: keep it alive for the rest of the
      // process rather than free it under them.
      if (std::shared_ptr<ClientCoreImpl> self = weak_from_this().lock()) {
        new std::shared_ptr<ClientCoreImpl>(std::move(self));  // intentionally leaked
      }
    }
    // Registrations and info fetches waiting on each other were failed by their calls.
  }

 private:
  struct LayerState {
    std::optional<LayerSpec> spec;
    bool confirmed = false;
    bool registering = false;
    std::vector<absl::AnyInvocable<void(absl::Status, bool)>> waiters;
  };

  using Continue = absl::AnyInvocable<void(absl::Status, bool in_band)>;

  void SetReadiness(Readiness r) {
    bool changed;
    {
      absl::MutexLock lock(&mu_);
      changed = readiness_ != r;
      readiness_ = r;
    }
    if (changed && listener_) listener_(r);
  }

  void OnWatchStatus(Readiness r) {
    {
      absl::MutexLock lock(&mu_);
      watch_failures_ = 0;
    }
    SetReadiness(r);
  }

  void OnWatchEnded(const grpc::Status& status, bool got_message) {
    int failures;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      // The worker may come back as a new process with other limits.
      limits_.reset();
      failures = got_message ? 0 : ++watch_failures_;
    }
    (void)status;
    SetReadiness(Readiness::kUnknown);
    // A watch that ended after reporting restarts at once; one that keeps failing (a worker
    // without a health service) backs off up to 1 s. Reconnecting is gRPC's (wait_for_ready).
    const absl::Duration delay =
        std::min(absl::Milliseconds(50) * (1 << std::min(failures, 5)), absl::Seconds(1));
    std::weak_ptr<ClientCoreImpl> weak = weak_from_this();
    timer_->Schedule(absl::Now() + (failures == 0 ? absl::ZeroDuration() : delay), [weak] {
      if (auto self = weak.lock()) self->StartWatch();
    });
  }

  // Runs `next` once the worker's limits are known (fetching them once for all waiters).
  void WithLimits(absl::Time deadline, bool wait_for_ready, Continue next) {
    enum class Action { kCancelled, kReady, kWait, kFetch } action;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) {
        action = Action::kCancelled;
      } else if (limits_.has_value()) {
        action = Action::kReady;
      } else {
        limit_waiters_.push_back(std::move(next));
        action = fetching_limits_ ? Action::kWait : Action::kFetch;
        fetching_limits_ = true;
      }
    }
    if (action == Action::kCancelled) {
      next(absl::CancelledError("the client is shut down"), false);
      return;
    }
    if (action == Action::kReady) {
      next(absl::OkStatus(), true);
      return;
    }
    if (action == Action::kWait) return;
    ClientCoreImpl* self = this;
    GetServerInfoAsync(deadline, wait_for_ready, [self](absl::StatusOr<ServerInfo> info) {
      std::vector<Continue> waiters;
      {
        absl::MutexLock lock(&self->mu_);
        self->fetching_limits_ = false;
        if (info.ok()) self->limits_ = info->limits;
        waiters.swap(self->limit_waiters_);
      }
      for (auto& w : waiters) w(info.status(), false);
    });
  }

  // Limits, then the registration of every layer in `layer_ids` this core holds a spec of and
  // has not confirmed on the worker; then `next`.
  void Prepare(std::set<std::string> layer_ids, absl::Time deadline, bool wait_for_ready,
               Continue next) {
    ClientCoreImpl* self = this;
    WithLimits(deadline, wait_for_ready,
               [self, layer_ids = std::move(layer_ids), deadline, wait_for_ready,
                next = std::move(next)](absl::Status s, bool in_band) mutable {
                 if (!s.ok()) {
                   next(s, in_band);
                   return;
                 }
                 self->EnsureLayers(std::move(layer_ids), deadline, wait_for_ready,
                                    std::move(next));
               });
  }

  void EnsureLayers(std::set<std::string> layer_ids, absl::Time deadline, bool wait_for_ready,
                    Continue next) {
    // Joins every registration this request waits for.
    struct Join {
      absl::Mutex mu;
      int pending ABSL_GUARDED_BY(mu) = 1;
      absl::Status first_error ABSL_GUARDED_BY(mu);
      bool in_band ABSL_GUARDED_BY(mu) = true;
      Continue next;
      void Arrive(absl::Status s, bool band) {
        Continue run;
        absl::Status result;
        bool result_band;
        {
          absl::MutexLock lock(&mu);
          if (!s.ok() && first_error.ok()) {
            first_error = s;
            in_band = band;
          }
          if (--pending > 0) return;
          run = std::move(next);
          result = first_error;
          result_band = in_band;
        }
        run(result, result_band);
      }
    };
    auto join = std::make_shared<Join>();
    join->next = std::move(next);
    std::vector<LayerSpec> to_upload;
    {
      absl::MutexLock lock(&mu_);
      for (const std::string& id : layer_ids) {
        auto it = layers_.find(id);
        if (it == layers_.end() || !it->second.spec.has_value() || it->second.confirmed) continue;
        {
          absl::MutexLock jl(&join->mu);
          ++join->pending;
        }
        it->second.waiters.push_back(
            [join](absl::Status s, bool band) { join->Arrive(std::move(s), band); });
        if (!it->second.registering) {
          it->second.registering = true;
          to_upload.push_back(*it->second.spec);
        }
      }
    }
    ClientCoreImpl* self = this;
    for (LayerSpec& spec : to_upload) {
      const std::string id = spec.id();
      const std::string digest = spec.digest();
      Upload(
          std::move(spec), deadline, wait_for_ready,
          [self, id, digest](absl::StatusOr<RegisteredLayer> r) {
            std::vector<absl::AnyInvocable<void(absl::Status, bool)>> waiters;
            {
              absl::MutexLock lock(&self->mu_);
              auto it = self->layers_.find(id);
              if (it != self->layers_.end()) {
                it->second.registering = false;
                if (r.ok() && it->second.spec.has_value() && it->second.spec->digest() == digest) {
                  it->second.confirmed = true;
                }
                waiters.swap(it->second.waiters);
              }
            }
            // A registration refused by the worker is in-band (INVALID_ARGUMENT, ...); a
            // transport failure is not.
            const bool band = r.ok() || !IsTransportCode(r.status().code());
            for (auto& w : waiters) w(r.status(), band);
          });
    }
    join->Arrive(absl::OkStatus(), true);
  }

  static bool IsTransportCode(absl::StatusCode code) {
    return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kCancelled ||
           code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kInternal ||
           code == absl::StatusCode::kUnknown;
  }

  void Upload(LayerSpec spec, absl::Time deadline, bool wait_for_ready,
              absl::AnyInvocable<void(absl::StatusOr<RegisteredLayer>)> done) {
    uint32_t chunk = options_.chunk_bytes;
    {
      absl::MutexLock lock(&mu_);
      if (limits_.has_value() && limits_->chunk_bytes > 0) {
        chunk = std::min(chunk, limits_->chunk_bytes);
      }
    }
    auto upload =
        std::make_shared<RegisterUpload>(std::move(spec), target_, chunk, std::move(done));
    upload->Start(generic_.get(), &live_, deadline, wait_for_ready, authorization_);
  }

  void StartStream(std::vector<std::unique_ptr<OpCall>> calls) {
    ComputeStreamConfig config;
    config.target = target_;
    config.authorization = authorization_;
    config.deadline = absl::InfinitePast();
    for (const auto& c : calls) config.deadline = std::max(config.deadline, c->deadline);
    config.wait_for_ready = calls.front()->wait_for_ready;
    config.chunk_bytes = options_.chunk_bytes;
    config.window = std::max(options_.max_inflight_per_stream, 1);
    config.max_result_bytes = options_.max_result_bytes;
    {
      absl::MutexLock lock(&mu_);
      if (limits_.has_value()) {
        if (limits_->chunk_bytes > 0) {
          config.chunk_bytes = std::min(config.chunk_bytes, limits_->chunk_bytes);
        }
        if (limits_->max_inflight_per_stream > 0) {
          config.window =
              std::min(config.window, static_cast<int>(limits_->max_inflight_per_stream));
        }
        if (config.max_result_bytes == 0) config.max_result_bytes = limits_->max_tensor_bytes;
      }
    }
    ClientCoreImpl* self = this;
    StartComputeStream(generic_.get(), &live_, timer_, config, std::move(calls),
                       [self](std::unique_ptr<OpCall> call, OpOutcome outcome) {
                         self->OnComputeDone(std::move(call), std::move(outcome));
                       });
  }

  void OnComputeDone(std::unique_ptr<OpCall> call, OpOutcome outcome) {
    ++call->attempts;
    if (outcome.in_band && outcome.status.code() == absl::StatusCode::kNotFound &&
        !call->layer_id.empty() && !call->reregistered) {
      bool known = false;
      {
        absl::MutexLock lock(&mu_);
        auto it = layers_.find(call->layer_id);
        if (it != layers_.end() && it->second.spec.has_value()) {
          known = true;
          it->second.confirmed = false;  // the worker lost it (restarted empty)
        }
      }
      if (known) {
        call->reregistered = true;
        std::vector<std::unique_ptr<OpCall>> retry;
        retry.push_back(std::move(call));
        Submit(std::move(retry));
        return;
      }
    }
    CompleteAttempt(std::move(call), std::move(outcome));
  }

  const std::string target_;
  const ClientOptions options_;
  const std::string authorization_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> generic_;
  std::unique_ptr<atp::v1::Worker::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
  std::shared_ptr<TimerQueue> timer_;
  const ReadinessListener listener_;
  LiveCalls live_;

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  Readiness readiness_ ABSL_GUARDED_BY(mu_) = Readiness::kUnknown;
  int watch_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::weak_ptr<HealthWatch> watch_ ABSL_GUARDED_BY(mu_);
  std::optional<WorkerLimits> limits_ ABSL_GUARDED_BY(mu_);
  bool fetching_limits_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Continue> limit_waiters_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, LayerState> layers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

bool IsRetryable(const OpOutcome& outcome) {
  switch (outcome.status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kCancelled:
      return true;
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return !outcome.in_band;  // a broken stream, not the worker's verdict
    default:
      return false;
  }
}

absl::StatusOr<std::shared_ptr<ClientCore>> ClientCore::Create(std::string target,
                                                               const ClientOptions& options,
                                                               std::shared_ptr<TimerQueue> timer,
                                                               ReadinessListener listener,
                                                               std::string name) {
  if (target.empty()) return absl::InvalidArgumentError("the worker target is empty");
  std::string token = options.bearer_token;
  if (!options.bearer_token_file.empty()) {
    absl::StatusOr<std::string> text = ReadTextFile(options.bearer_token_file, "token file");
    if (!text.ok()) return text.status();
    token = std::string(absl::StripAsciiWhitespace(*text));
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file ", options.bearer_token_file, " is empty"));
    }
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  grpc::ChannelArguments args;
  if (options.tls.active()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls.ca_file.empty()) {
      auto ca = ReadTextFile(options.tls.ca_file, "TLS CA file");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (options.tls.cert_file.empty() != options.tls.key_file.empty()) {
      return absl::InvalidArgumentError(
          "mutual TLS needs both a client certificate file and its key file");
    }
    if (!options.tls.cert_file.empty()) {
      auto cert = ReadTextFile(options.tls.cert_file, "TLS certificate file");
      if (!cert.ok()) return cert.status();
      auto key = ReadTextFile(options.tls.key_file, "TLS key file");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls.server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls.server_name_override);
    }
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (timer == nullptr) timer = std::make_shared<TimerQueue>();
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.reconnect_backoff_initial)));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.reconnect_backoff_initial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.reconnect_backoff_max)));
  // Each core has its own connection (two Clients of one worker do not share a subchannel).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetServiceConfigJSON(R"({"loadBalancingConfig":[{"round_robin":{}}]})");
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(target, credentials, args);
  if (name.empty()) name = target;
  auto core = std::make_shared<ClientCoreImpl>(
      std::move(name), options, token.empty() ? std::string() : absl::StrCat("Bearer ", token),
      std::move(channel), std::move(timer), std::move(listener));
  core->StartWatch();
  return core;
}

}  // namespace atp::client::internal
