// A minimal HTTP/1.1 server for Prometheus scrapes: GET /metrics answers the text exposition, any
// other path 404. One thread with a default-sized stack serves connections one at a time with
// short timeouts (a scrape endpoint needs no more). It replaces prometheus-cpp's civetweb exposer,
// whose 100 KiB thread stacks cannot start in a process that links cuBLAS (BUILD-NOTES gotcha 1).
// Thread-safe.
#ifndef ATP_SERVICE_METRICS_HTTP_H_
#define ATP_SERVICE_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace atp::service {

// Splits "host:port" / "[v6]:port" into host and port. INVALID_ARGUMENT when malformed.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address);

class MetricsHttpServer {
 public:
  // Listens on `address` (port 0 picks one) and serves `render()` at /metrics. UNAVAILABLE when the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::function<std::string()> render);
  // Stops serving and joins the thread.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int listen_fd, int wake_read, int wake_write, int port,
                    std::function<std::string()> render);
  void Serve();
  void HandleConnection(int fd);

  int listen_fd_;
  int wake_read_;
  int wake_write_;
  int port_;
  std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_METRICS_HTTP_H_
