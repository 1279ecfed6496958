// An atp worker: the gRPC server (atp.v1.Worker, grpc.health.v1, reflection) with its executor,
// layer registry, statistics, Prometheus endpoint and optional plaintext health listener.
//
// Start() brings everything up and returns once the listeners accept calls; Shutdown() drains:
// readiness turns NOT_SERVING, new requests are refused, admitted work finishes (up to the drain
// timeout, after which it is cancelled), then everything stops in order and the backend is freed.
// main.cc and the tests use this class; it hides every gRPC type. Thread-safe.
#ifndef ATP_SERVICE_WORKER_SERVER_H_
#define ATP_SERVICE_WORKER_SERVER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "atp/kernels/backend.h"
#include "atp/service/worker_options.h"

namespace atp::service {

// The worker's version ("0.1.0").
const char* WorkerVersion();

// Process-wide malloc settings for a worker process (call early in main): keeps large freed blocks
// for reuse instead of returning them to the kernel, which a profile showed to cost a quarter of
// the time of large transfers in page faults.
void TuneMallocForLargePayloads();

class WorkerServer {
 public:
  // Creates the backend named by options.backend. INVALID_ARGUMENT for bad options or TLS/token
  // files, FAILED_PRECONDITION when the backend cannot start, UNAVAILABLE when an address cannot
  // be bound.
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(const WorkerOptions& options);
  // Same, serving `backend` (options.backend, device and threads are then ignored).
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(
      const WorkerOptions& options, std::unique_ptr<kernels::Backend> backend);

  // Shuts down at once (no drain) if Shutdown() was not called.
  ~WorkerServer();
  WorkerServer(const WorkerServer&) = delete;
  WorkerServer& operator=(const WorkerServer&) = delete;

  // The bound ports: the API, the plaintext health listener (0 if none), the metrics endpoint
  // (0 if none).
  int port() const;
  int health_port() const;
  int metrics_port() const;

  // Drains (options.drain_timeout) and stops. Idempotent; concurrent callers all return once
  // the worker has stopped.
  void Shutdown();
  void Shutdown(absl::Duration drain_timeout);

  // Blocks until the worker has stopped.
  void Wait();

 private:
  struct Impl;
  explicit WorkerServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_WORKER_SERVER_H_
