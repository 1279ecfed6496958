// Pool: many atp workers behind one Offloader, with layer placement, least-loaded scheduling,
// readiness tracking and replay on failure.
//
//   auto pool =
//   atp::client::Pool::Create({"dns:///atp-worker-headless.ml.svc.cluster.local:50051"});
//   (*pool)->WaitUntilReady(1, absl::Now() + absl::Seconds(30));
//   (*pool)->RegisterLayer(spec);                 // on every worker (default placement)
//   auto y = (*pool)->AtpAttention(request);      // least-loaded ready worker, replayed on failure
//
// Workers. Each target is "host:port" (one worker) or "dns:///host:port" — the Kubernetes
// headless-Service convention, where the name resolves to one address per ready pod. A dns:///
// target is resolved by the pool itself (getaddrinfo) into one connection per address, because
// placement, readiness and failover need to know which worker is which (a single gRPC channel
// with round_robin would hide that); it is resolved again every PoolOptions::resolve_interval and
// soon after a worker of it becomes unreachable, adding connections for new addresses and retiring
// those of vanished ones once idle. With TLS, the connections verify the certificate against the
// DNS name (TlsOptions::server_name_override).
//
// Readiness. Each worker's grpc.health.v1 readiness ("atp.v1.Worker") is watched; only workers
// reporting SERVING receive requests, so a draining worker (NOT_SERVING after SIGTERM) gets no new
// work while it finishes what it has.
//
// Placement. A layer is registered on every worker by default, or on Placement::replicas workers
// (chosen among the ready ones holding the fewest layers). The pool keeps every spec: a worker
// that restarted empty gets its layers registered again transparently (on its NOT_FOUND), a new
// worker gets them before its first request, and a layer whose workers are all down is placed on
// another ready worker.
//
// Scheduling and replay. A request goes to the ready worker holding its layer with the fewest
// requests in flight, at most PoolOptions::max_inflight_per_worker per worker (several in flight
// overlap one request's transfer with another's compute); others wait in the pool, in order, until
// a worker frees up or their deadline passes. A request that fails with UNAVAILABLE, a broken
// stream, a draining or unhealthy worker (FAILED_PRECONDITION), CANCELLED by a worker shutting
// down, RESOURCE_EXHAUSTED or ABORTED is replayed on another worker, from the caller's buffers,
// up to PoolOptions::max_attempts attempts and within its deadline (gRPC itself never retries
// such large messages). Other errors (INVALID_ARGUMENT, NOT_FOUND for an unknown layer,
// DEADLINE_EXCEEDED, ...) are returned as they are.
//
// Thread-safe. The destructor fails waiting requests with CANCELLED, cancels those in flight and
// waits for them; do not destroy a Pool from one of its own callbacks.
#ifndef ATP_CLIENT_POOL_H_
#define ATP_CLIENT_POOL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "atp/client/layer.h"
#include "atp/client/offloader.h"
#include "atp/client/ops.h"
#include "atp/client/options.h"

namespace atp::client {

class Pool final : public Offloader {
 public:
  // INVALID_ARGUMENT for no targets, a malformed dns:/// target or unreadable TLS/token files. A
  // dns:/// name that does not resolve yet is not an error: it is resolved again until it does.
  static absl::StatusOr<std::unique_ptr<Pool>> Create(std::vector<std::string> targets,
                                                      PoolOptions options = {});
  ~Pool() override;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  const PoolOptions& options() const;

  // Waits until at least `min_workers` workers report SERVING; DEADLINE_EXCEEDED listing each
  // worker's state otherwise.
  absl::Status WaitUntilReady(int min_workers, absl::Time deadline);

  // A snapshot of the workers, for monitoring and tests.
  struct WorkerState {
    std::string address;
    Readiness readiness = Readiness::kUnknown;
    // A request to it failed at the transport level; it gets no work until its health watch
    // reports SERVING again.
    bool suspect = false;
    int inflight = 0;
    uint64_t completed = 0;  // requests it answered successfully
    uint64_t failed = 0;     // attempts on it that failed
  };
  std::vector<WorkerState> Workers() const;
  // Addresses of the workers a layer is placed on (empty for an unknown layer).
  std::vector<std::string> PlacementOf(absl::string_view layer_id) const;

  // Registers with the pool's default placement, or with `placement`. Returns once the layer is
  // on every placed worker that is ready (or, when none is, on the first that becomes ready).
  absl::Status RegisterLayer(const LayerSpec& layer, const CallOptions& options = {}) override;
  void RegisterLayerAsync(const LayerSpec& layer, StatusCallback callback,
                          const CallOptions& options = {}) override;
  absl::Status RegisterLayer(const LayerSpec& layer, const Placement& placement,
                             const CallOptions& options = {});
  void RegisterLayerAsync(const LayerSpec& layer, const Placement& placement,
                          StatusCallback callback, const CallOptions& options = {});
  // Forgets the layer and removes it from the ready workers that hold it.
  absl::Status RemoveLayer(absl::string_view layer_id, const CallOptions& options = {}) override;
  void RemoveLayerAsync(absl::string_view layer_id, StatusCallback callback,
                        const CallOptions& options = {}) override;

  // Statistics of one worker (an address from Workers()).
  absl::StatusOr<WorkerStatistics> GetWorkerStatistics(absl::string_view address,
                                                       const CallOptions& options = {});
  void GetWorkerStatisticsAsync(absl::string_view address, Callback<WorkerStatistics> callback,
                                const CallOptions& options = {});

 protected:
  void Submit(std::vector<std::unique_ptr<internal::OpCall>> calls) override;
  absl::Time DeadlineOf(const CallOptions& options) const override;
  bool WaitForReadyDefault() const override { return false; }

 private:
  struct Impl;
  explicit Pool(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace atp::client

#endif  // ATP_CLIENT_POOL_H_
