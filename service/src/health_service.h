// grpc.health.v1.Health for a worker: "" is liveness, "atp.v1.Worker" readiness. One HealthState
// holds the statuses; a HealthService per gRPC server (the API listener and the optional
// plaintext probe listener) serves Check and Watch from it. Watch sends the current status, then
// every change, until the client leaves or the state shuts down. Thread-safe.
#ifndef ATP_SERVICE_HEALTH_SERVICE_H_
#define ATP_SERVICE_HEALTH_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace atp::service {

class HealthState {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Receives status changes of one service name.
  class Watcher {
   public:
    virtual ~Watcher() = default;
    virtual void OnStatus(ServingStatus status) = 0;
    // The server is going away; end the watch.
    virtual void OnShutdown() = 0;
  };

  // Sets a service's status and tells its watchers. Ignored after Shutdown().
  void Set(const std::string& service, bool serving);
  // SERVICE_UNKNOWN for a name never set.
  ServingStatus Get(const std::string& service) const;

  struct WatchStart {
    uint64_t id = 0;
    ServingStatus status;
    // The state is shut down already: send `status` and end the watch.
    bool shut_down = false;
  };
  // Adds a watcher; returns its id and the current status (under one lock, so no change is lost).
  WatchStart AddWatcher(const std::string& service, std::weak_ptr<Watcher> watcher);
  void RemoveWatcher(uint64_t id);

  // Every status becomes NOT_SERVING and every watch ends.
  void Shutdown();
  // Waits until every watch has ended (after Shutdown) or `deadline` passes; true when none is
  // left.
  bool WaitForWatchesToEnd(absl::Time deadline);

 private:
  struct WatcherEntry {
    std::string service;
    std::weak_ptr<Watcher> watcher;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, ServingStatus> statuses_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, WatcherEntry> watchers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

using RawHealthService = grpc::health::v1::Health::WithRawCallbackMethod_Check<
    grpc::health::v1::Health::WithRawCallbackMethod_Watch<grpc::health::v1::Health::Service>>;

class HealthService final : public RawHealthService {
 public:
  // `state` must outlive the service.
  explicit HealthService(HealthState* state) : state_(state) {}

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Watch(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request) override;

 private:
  HealthState* const state_;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_HEALTH_SERVICE_H_
