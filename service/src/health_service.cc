#include "health_service.h"

#include <utility>
#include <vector>

#include "grpc_util.h"

namespace atp::service {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ServingStatus = HealthState::ServingStatus;

class WatchReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                           public HealthState::Watcher,
                           public std::enable_shared_from_this<WatchReactor> {
 public:
  explicit WatchReactor(HealthState* state) : state_(state) {}

  void Start(std::shared_ptr<WatchReactor> self, const grpc::ByteBuffer* request) {
    absl::MutexLock lock(&mu_);
    self_ = std::move(self);
    HealthCheckRequest req;
    if (absl::Status s = ParseBuffer(*request, &req, "grpc.health.v1.HealthCheckRequest");
        !s.ok()) {
      FinishLocked(wire::ToGrpcStatus(s));
      return;
    }
    const HealthState::WatchStart start = state_->AddWatcher(req.service(), self_);
    watcher_id_ = start.id;
    pending_ = start.status;
    shutdown_ = start.shut_down;
    WriteLocked();
  }

  void OnStatus(ServingStatus status) override {
    absl::MutexLock lock(&mu_);
    pending_ = status;
    WriteLocked();
  }

  void OnShutdown() override {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    WriteLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the watch stream broke"));
      return;
    }
    WriteLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client ended the watch"));
  }

  void OnDone() override {
    std::shared_ptr<WatchReactor> self;
    uint64_t id;
    {
      absl::MutexLock lock(&mu_);
      self = std::move(self_);
      id = watcher_id_;
    }
    if (id != 0) state_->RemoveWatcher(id);
  }

 private:
  // Sends the latest status if it differs from the last one sent and no write is in flight; after
  // a shutdown, ends the watch once the last status is out.
  void WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (!pending_.has_value() || pending_ == sent_) {
      if (shutdown_) {
        FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
      }
      return;
    }
    HealthCheckResponse response;
    response.set_status(*pending_);
    sent_ = pending_;
    buffer_ = SerializeToBuffer(response);
    writing_ = true;
    StartWrite(&buffer_);
  }

  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  HealthState* const state_;
  absl::Mutex mu_;
  std::shared_ptr<WatchReactor> self_ ABSL_GUARDED_BY(mu_);
  uint64_t watcher_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<ServingStatus> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<ServingStatus> sent_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer buffer_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

void HealthState::Set(const std::string& service, bool serving) {
  const ServingStatus status =
      serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  std::vector<std::shared_ptr<Watcher>> notify;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    auto it = statuses_.find(service);
    if (it != statuses_.end() && it->second == status) return;
    statuses_[service] = status;
    for (auto& [id, w] : watchers_) {
      if (w.service != service) continue;
      if (auto watcher = w.watcher.lock()) notify.push_back(std::move(watcher));
    }
  }
  for (auto& w : notify) w->OnStatus(status);
}

ServingStatus HealthState::Get(const std::string& service) const {
  absl::MutexLock lock(&mu_);
  auto it = statuses_.find(service);
  return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

HealthState::WatchStart HealthState::AddWatcher(const std::string& service,
                                                std::weak_ptr<Watcher> watcher) {
  absl::MutexLock lock(&mu_);
  WatchStart start;
  start.id = next_id_++;
  watchers_.emplace(start.id, WatcherEntry{service, std::move(watcher)});
  auto it = statuses_.find(service);
  start.status = it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
  start.shut_down = shut_down_;
  return start;
}

void HealthState::RemoveWatcher(uint64_t id) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(id);
}

void HealthState::Shutdown() {
  std::vector<std::shared_ptr<Watcher>> notify;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    for (auto& [name, status] : statuses_) status = HealthCheckResponse::NOT_SERVING;
    for (auto& [id, w] : watchers_) {
      if (auto watcher = w.watcher.lock()) notify.push_back(std::move(watcher));
    }
  }
  for (auto& w : notify) {
    w->OnStatus(HealthCheckResponse::NOT_SERVING);
    w->OnShutdown();
  }
}

bool HealthState::WaitForWatchesToEnd(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return watchers_.empty(); };
  return mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer* request,
                                               grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  HealthCheckRequest req;
  if (absl::Status s = ParseBuffer(*request, &req, "grpc.health.v1.HealthCheckRequest"); !s.ok()) {
    reactor->Finish(wire::ToGrpcStatus(s));
    return reactor;
  }
  const ServingStatus status = state_->Get(req.service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "unknown service \"" + req.service() +
                                     "\"; this worker reports \"\" and \"atp.v1.Worker\""));
    return reactor;
  }
  HealthCheckResponse out;
  out.set_status(status);
  *response = SerializeToBuffer(out);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* HealthService::Watch(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  (void)context;
  auto reactor = std::make_shared<WatchReactor>(state_);
  WatchReactor* raw = reactor.get();
  raw->Start(std::move(reactor), request);
  return raw;
}

}  // namespace atp::service
