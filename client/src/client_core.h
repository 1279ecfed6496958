// ClientCore: the connection to one worker, shared by the public Client and by each worker of a
// Pool. It owns the gRPC channel (TLS, token, reconnect backoff), watches the worker's readiness
// (grpc.health.v1 Watch on "atp.v1.Worker"), learns its limits (GetServerInfo), keeps the specs of
// the layers it should hold and registers them before first use and again after a NOT_FOUND
// (the worker restarted empty), and runs compute calls on Compute streams.
//
// No gRPC types in this header, so that pool.cc and client.cc stay cheap to compile.
// Thread-safe. Shutdown() must be called (not from an SDK callback) before the last reference
// goes away; it cancels what is in flight and waits for it to end.
#ifndef ATP_CLIENT_SRC_CLIENT_CORE_H_
#define ATP_CLIENT_SRC_CLIENT_CORE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "atp/client/layer.h"
#include "atp/client/ops.h"
#include "atp/client/options.h"
#include "op_call.h"
#include "timer_queue.h"

namespace atp::client::internal {

class ClientCore {
 public:
  // Called (from an SDK thread) whenever the readiness the health watch reports changes.
  using ReadinessListener = std::function<void(Readiness)>;

  // `target`: a gRPC target ("host:port", "ipv4:…", "dns:///name:port"; several addresses of one
  // name are balanced by gRPC's round_robin). INVALID_ARGUMENT for unreadable TLS or token files.
  // `name` names the worker in messages and CallInfo::worker (default: the target).
  static absl::StatusOr<std::shared_ptr<ClientCore>> Create(std::string target,
                                                            const ClientOptions& options,
                                                            std::shared_ptr<TimerQueue> timer,
                                                            ReadinessListener listener = nullptr,
                                                            std::string name = "");
  virtual ~ClientCore() = default;

  // The worker's name (its address): what messages and CallInfo::worker say.
  virtual const std::string& target() const = 0;
  virtual const ClientOptions& options() const = 0;
  virtual Readiness readiness() const = 0;
  // The worker's limits once known (learnt on first use).
  virtual std::optional<WorkerLimits> limits() const = 0;

  // Restarts the health watch, so that the next readiness report is fresh (after a failed call).
  virtual void RefreshHealth() = 0;

  // Runs the calls (pipelined on one Compute stream when there are several), after registering
  // their layers if needed. Each call is handed back through its on_attempt exactly once. A call
  // answered NOT_FOUND for a layer whose spec this core holds is retried once after registering
  // the layer again.
  virtual void Submit(std::vector<std::unique_ptr<OpCall>> calls) = 0;

  // Keeps `spec` so that it is registered before first use here (and after NOT_FOUND).
  virtual void RememberLayer(const LayerSpec& spec) = 0;
  // Forgets a spec (without touching the worker).
  virtual void ForgetLayer(const std::string& layer_id) = 0;
  // Whether this core keeps `layer_id`, and whether the worker is known to hold it.
  virtual bool HasLayer(const std::string& layer_id) const = 0;
  virtual bool LayerConfirmed(const std::string& layer_id) const = 0;

  // Remembers and registers `spec` now.
  virtual void RegisterLayerAsync(
      const LayerSpec& spec, absl::Time deadline, bool wait_for_ready,
      absl::AnyInvocable<void(absl::StatusOr<RegisteredLayer>)> done) = 0;
  virtual void RemoveLayerAsync(const std::string& layer_id, absl::Time deadline,
                                absl::AnyInvocable<void(absl::Status)> done) = 0;
  virtual void ListLayersAsync(
      absl::Time deadline,
      absl::AnyInvocable<void(absl::StatusOr<std::vector<RegisteredLayer>>)> done) = 0;
  virtual void GetServerInfoAsync(absl::Time deadline, bool wait_for_ready,
                                  absl::AnyInvocable<void(absl::StatusOr<ServerInfo>)> done) = 0;
  virtual void GetStatisticsAsync(
      absl::Time deadline, absl::AnyInvocable<void(absl::StatusOr<WorkerStatistics>)> done) = 0;
  // One grpc.health.v1 Check of `service` ("" liveness, "atp.v1.Worker" readiness).
  virtual void CheckHealthAsync(const std::string& service, absl::Time deadline,
                                bool wait_for_ready,
                                absl::AnyInvocable<void(absl::StatusOr<Readiness>)> done) = 0;

  // Cancels every call in flight (their callbacks run with CANCELLED), stops the health watch and
  // waits until every call has ended. Later calls fail at once with CANCELLED.
  virtual void Shutdown() = 0;
};

// Whether a call that ended with `outcome` may be replayed on another worker.
bool IsRetryable(const OpOutcome& outcome);

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_CLIENT_CORE_H_
