// Client: the connection to one atp worker.
//
//   auto client = atp::client::Client::Create("127.0.0.1:50051");
//   auto layer = atp::client::LayerSpec::FromSafetensors("enc.0.attn", "attn.safetensors");
//   (*client)->RegisterLayer(*layer);
//   auto y = (*client)->AtpAttention({.layer_id = "enc.0.attn", .x = x_view});
//
// Every operation of Offloader (sync, async and batch forms) plus what a single worker tells:
// server info and limits, readiness, statistics, resident layers. The client keeps the specs of
// the layers registered through it and registers a layer again by itself when the worker answers
// NOT_FOUND (it restarted empty), then retries the request once. It does not replay a request on
// another worker: that is the Pool's job.
//
// The target is any gRPC target: "host:port", or "dns:///name:port", whose addresses gRPC
// balances with round_robin (requests may then land on different workers; the NOT_FOUND
// re-registration above keeps that working, but per-worker placement and failover need a Pool).
//
// Thread-safe. The destructor cancels calls still in flight (their callbacks run with CANCELLED)
// and waits for them; do not destroy a Client from one of its own callbacks.
#ifndef ATP_CLIENT_CLIENT_H_
#define ATP_CLIENT_CLIENT_H_

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

namespace internal {
class ClientCore;
}  // namespace internal

class Client final : public Offloader {
 public:
  // Creates the connection (lazily: nothing is sent until the first call; the health watch starts
  // at once). INVALID_ARGUMENT for an empty target or unreadable TLS/token files.
  static absl::StatusOr<std::unique_ptr<Client>> Create(std::string target,
                                                        ClientOptions options = {});
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& target() const;
  const ClientOptions& options() const;

  // Readiness as the background health watch last saw it.
  Readiness readiness() const;
  // Waits until the worker reports SERVING; DEADLINE_EXCEEDED naming the last readiness when it
  // does not by `deadline`.
  absl::Status WaitUntilReady(absl::Time deadline);

  // One grpc.health.v1 Check: `service` "" is liveness, "atp.v1.Worker" readiness.
  absl::StatusOr<Readiness> CheckHealth(absl::string_view service = "atp.v1.Worker",
                                        const CallOptions& options = {});
  void CheckHealthAsync(absl::string_view service, Callback<Readiness> callback,
                        const CallOptions& options = {});
  absl::StatusOr<ServerInfo> GetServerInfo(const CallOptions& options = {});
  void GetServerInfoAsync(Callback<ServerInfo> callback, const CallOptions& options = {});
  absl::StatusOr<WorkerStatistics> GetStatistics(const CallOptions& options = {});
  void GetStatisticsAsync(Callback<WorkerStatistics> callback, const CallOptions& options = {});
  absl::StatusOr<std::vector<RegisteredLayer>> ListLayers(const CallOptions& options = {});
  void ListLayersAsync(Callback<std::vector<RegisteredLayer>> callback,
                       const CallOptions& options = {});

  // Registers on the worker and tells what it holds now.
  absl::StatusOr<RegisteredLayer> RegisterLayerWithInfo(const LayerSpec& layer,
                                                        const CallOptions& options = {});
  void RegisterLayerWithInfoAsync(const LayerSpec& layer, Callback<RegisteredLayer> callback,
                                  const CallOptions& options = {});

  absl::Status RegisterLayer(const LayerSpec& layer, const CallOptions& options = {}) override;
  void RegisterLayerAsync(const LayerSpec& layer, StatusCallback callback,
                          const CallOptions& options = {}) override;
  absl::Status RemoveLayer(absl::string_view layer_id, const CallOptions& options = {}) override;
  void RemoveLayerAsync(absl::string_view layer_id, StatusCallback callback,
                        const CallOptions& options = {}) override;

 protected:
  void Submit(std::vector<std::unique_ptr<internal::OpCall>> calls) override;
  absl::Time DeadlineOf(const CallOptions& options) const override;
  bool WaitForReadyDefault() const override;

 private:
  struct ReadyState;
  struct Limiter;
  Client(std::shared_ptr<internal::ClientCore> core, std::shared_ptr<ReadyState> ready);

  std::shared_ptr<internal::ClientCore> core_;
  std::shared_ptr<ReadyState> ready_;
  std::shared_ptr<Limiter> limiter_;
};

}  // namespace atp::client

#endif  // ATP_CLIENT_CLIENT_H_
