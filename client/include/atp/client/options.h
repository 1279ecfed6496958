// Options of the client SDK: how to reach workers (TLS, token), how calls behave (deadlines,
// chunking, in-flight requests) and how a pool places layers and fails over. Plain values; every
// field documents its default.
#ifndef ATP_CLIENT_OPTIONS_H_
#define ATP_CLIENT_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"

namespace atp::client {

// Transport security. With every field empty the connection is plaintext.
struct TlsOptions {
  // Turns TLS on. With ca_file empty the system's root certificates verify the worker.
  bool enabled = false;
  // PEM file of the CA that signed the workers' certificates. Setting it turns TLS on.
  std::string ca_file;
  // PEM files of the client's certificate chain and key, for mutual TLS. Setting them turns TLS on.
  std::string cert_file;
  std::string key_file;
  // Host name to verify the worker's certificate against instead of the target's host. A pool that
  // resolved a dns:/// name sets it to that name for the per-address connections, so certificates
  // issued for the Service's name keep verifying.
  std::string server_name_override;

  bool active() const {
    return enabled || !ca_file.empty() || !cert_file.empty() || !key_file.empty();
  }
};

// Options of one call.
struct CallOptions {
  // When the call must have finished; nullopt: now + ClientOptions::default_timeout. Expiry is
  // DEADLINE_EXCEEDED, and the worker stops the request's compute at its next check.
  std::optional<absl::Time> deadline;
  // Wait for the worker to become reachable (bounded by the deadline) instead of failing fast with
  // UNAVAILABLE; nullopt: ClientOptions::wait_for_ready. A pool always fails fast per worker and
  // waits for some ready worker itself.
  std::optional<bool> wait_for_ready;
};

struct ClientOptions {
  TlsOptions tls;
  // Bearer token sent as "authorization: Bearer <token>" on every call. Default: none.
  std::string bearer_token;
  // File holding the bearer token (surrounding whitespace ignored); read once when the client is
  // created. Default: none. Overrides bearer_token when set.
  std::string bearer_token_file;

  // Deadline of a call that sets none. Default 60 s.
  absl::Duration default_timeout = absl::Seconds(60);
  // Default of CallOptions::wait_for_ready. Default false: an unreachable worker fails fast.
  bool wait_for_ready = false;

  // Largest chunk of payload the client sends; the worker's advertised chunk size caps it.
  // Default 1 MiB.
  uint32_t chunk_bytes = 1u << 20;
  // Requests pipelined on one Compute stream by the batch calls; the worker's
  // max_inflight_per_stream caps it. Default 4.
  int max_inflight_per_stream = 4;
  // Largest result tensor accepted from a worker; 0: the worker's max_tensor_bytes. Default 0.
  uint64_t max_result_bytes = 0;
  // Compute streams a Client keeps open at once (each carries one request, or one batch pipelined
  // up to max_inflight_per_stream); more calls wait in the client, in order, so that a burst of
  // asynchronous calls does not overflow the worker's queue. 0: no limit. Default 8. (A Pool
  // limits per worker with PoolOptions::max_inflight_per_worker instead.)
  int max_concurrent_calls = 8;

  // Watch the worker's readiness (grpc.health.v1 Watch on "atp.v1.Worker") in the background.
  // Default true; a pool needs it.
  bool watch_health = true;
  // gRPC reconnect backoff after a worker became unreachable: first and longest wait. Defaults
  // 100 ms and 2 s (gRPC's own default grows to 120 s, far too slow to notice a restarted worker).
  absl::Duration reconnect_backoff_initial = absl::Milliseconds(100);
  absl::Duration reconnect_backoff_max = absl::Seconds(2);
};

// How a pool places a layer on its workers.
struct Placement {
  // Workers that hold each layer; 0 = every worker (the default). A layer placed on fewer workers
  // than this (some were unreachable) is added to more workers as they become ready, and a layer
  // whose workers are all unavailable is placed on another ready worker before failing.
  int replicas = 0;
};

struct PoolOptions {
  // Options of each worker connection (TLS, token, deadlines, chunking).
  ClientOptions client;
  // Default placement of layers registered without one.
  Placement placement;
  // Requests the pool keeps in flight on one worker; more wait in the pool for the least-loaded
  // ready worker. Several in flight overlap one request's transfer with another's compute.
  // Default 4.
  int max_inflight_per_worker = 4;
  // Attempts of one request over all workers (the first included) before its last error is
  // returned; a request is replayed on another worker after UNAVAILABLE, a broken stream, a
  // draining or unhealthy worker (FAILED_PRECONDITION), RESOURCE_EXHAUSTED or ABORTED. Default 5.
  int max_attempts = 5;
  // How often dns:/// targets are resolved again (and right after a worker of one became
  // unreachable, at most once per resolve_min_interval). Defaults 30 s and 1 s.
  absl::Duration resolve_interval = absl::Seconds(30);
  absl::Duration resolve_min_interval = absl::Seconds(1);
};

}  // namespace atp::client

#endif  // ATP_CLIENT_OPTIONS_H_
