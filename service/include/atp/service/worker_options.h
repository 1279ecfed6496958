// Everything that configures an atp-worker: listeners, backend, limits, security, draining and
// logging. main.cc fills it from flags (worker_flags.h); tests fill it directly. A plain value.
#ifndef ATP_SERVICE_WORKER_OPTIONS_H_
#define ATP_SERVICE_WORKER_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace atp::service {

enum class LogFormat { kText, kJson };
enum class LogLevel { kDebug, kInfo, kWarning, kError };

struct WorkerOptions {
  // host:port of the gRPC API (atp.v1.Worker, grpc.health.v1, reflection). Port 0 picks a free
  // port (WorkerServer::port() tells which).
  std::string listen = "0.0.0.0:50051";
  // host:port of an extra plaintext listener that serves only grpc.health.v1 (Kubernetes' gRPC
  // probes cannot speak TLS). Empty: none.
  std::string health_listen;
  // host:port of the Prometheus endpoint (HTTP GET /metrics). Empty: none.
  std::string metrics_listen = "0.0.0.0:9090";

  // "auto", "cpu" or "cuda", and the CUDA device index.
  std::string backend = "auto";
  int device = 0;
  // Threads of the CPU backend; 0 = all cores.
  int threads = 0;

  // Largest payload of one tensor.
  uint64_t max_tensor_bytes = uint64_t{1} << 30;
  // Largest sequence length L of a compute input.
  int64_t max_sequence_length = 131072;
  // Largest rank r any policy may resolve to, and largest r of a factored input.
  int64_t max_rank = 4096;
  // Requests admitted and not yet answered, over all streams.
  int max_inflight_requests = 64;
  // Requests in flight on one Compute stream.
  int max_inflight_per_stream = 8;
  // Requests whose input is complete and that wait for the executor.
  int max_queue_depth = 32;
  // Memory for request payloads being received, computed and answered (inputs plus an upper bound
  // of the outputs, reserved at admission).
  uint64_t max_inflight_bytes = uint64_t{4} << 30;
  // Memory for resident layer weights; 0 = 80% of the backend's memory.
  uint64_t max_resident_layer_bytes = 0;
  // Largest chunk the worker accepts and the size of the chunks it sends.
  uint32_t chunk_bytes = 1u << 20;

  // PEM files. tls_cert and tls_key together turn TLS on; tls_client_ca additionally requires and
  // verifies client certificates (mutual TLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // File holding the bearer token every atp.v1.Worker call must carry ("authorization: Bearer
  // <token>"); surrounding whitespace is ignored. Empty: no token.
  std::string token_file;

  // How long SIGTERM waits for in-flight work before cancelling it.
  absl::Duration drain_timeout = absl::Seconds(30);

  LogFormat log_format = LogFormat::kText;
  LogLevel log_level = LogLevel::kInfo;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_WORKER_OPTIONS_H_
