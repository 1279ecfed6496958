// Worker statistics: per-operation counters and timings, gauges of the queue, in-flight work and
// resident layers. One record feeds both the GetStatistics call (exact sums) and the Prometheus
// registry (counters, gauges and histograms) rendered at /metrics. Thread-safe.
#ifndef ATP_SERVICE_STATS_H_
#define ATP_SERVICE_STATS_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace atp::service {

// The operations statistics are kept for.
enum class Op : int {
  kAtpAttention = 0,
  kExactAttention,
  kLowRankLinear,
  kDecompose,
  kRegisterLayer,
};
inline constexpr int kNumOps = 5;

// "atp_attention", "exact_attention", "lowrank_linear", "decompose", "register_layer".
absl::string_view OpName(Op op);

// What one finished request did.
struct RequestRecord {
  Op op = Op::kDecompose;
  absl::StatusCode code = absl::StatusCode::kOk;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double receive_seconds = 0;  // header read to last input byte
  double queue_seconds = 0;    // input complete to compute start
  double compute_seconds = 0;  // on the backend
  double send_seconds = 0;     // first to last output byte handed to gRPC
};

struct OpSnapshot {
  std::string op;
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double receive_seconds = 0;
  double queue_seconds = 0;
  double compute_seconds = 0;
};

struct StatsSnapshot {
  std::vector<OpSnapshot> ops;
  int queue_depth = 0;
  int inflight_requests = 0;
  size_t resident_layers = 0;
  uint64_t resident_layer_bytes = 0;
  double uptime_seconds = 0;
  std::map<std::string, uint64_t> errors_by_code;  // "INVALID_ARGUMENT" -> count
};

class Stats {
 public:
  Stats();
  ~Stats();
  Stats(const Stats&) = delete;
  Stats& operator=(const Stats&) = delete;

  // A finished request (compute or registration).
  void Record(const RequestRecord& record);
  // A request refused before its operation was known (counted in errors_by_code only).
  void RecordError(absl::StatusCode code);
  // A finished RPC of any method with its final gRPC status (for stream-level and auth errors).
  void RecordRpc(absl::string_view method, absl::StatusCode code);

  void SetQueueDepth(int depth);
  void SetInflight(int requests, uint64_t bytes);
  void SetResident(size_t layers, uint64_t bytes);
  void SetReady(bool ready);
  void SetInfo(absl::string_view version, absl::string_view backend, absl::string_view device);

  StatsSnapshot Snapshot() const;
  // The Prometheus text exposition format (version 0.0.4).
  std::string PrometheusText() const;

 private:
  struct OpTotals {
    uint64_t requests = 0, errors = 0, bytes_in = 0, bytes_out = 0;
    double receive = 0, queue = 0, compute = 0;
  };

  const absl::Time start_ = absl::Now();
  mutable absl::Mutex mu_;
  std::array<OpTotals, kNumOps> totals_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> errors_by_code_ ABSL_GUARDED_BY(mu_);
  int queue_depth_ ABSL_GUARDED_BY(mu_) = 0;
  int inflight_ ABSL_GUARDED_BY(mu_) = 0;
  size_t layers_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t layer_bytes_ ABSL_GUARDED_BY(mu_) = 0;

  std::shared_ptr<prometheus::Registry> registry_;
  // Families and per-op children, created once (prometheus-cpp families are thread-safe).
  prometheus::Family<prometheus::Counter>* errors_family_;
  prometheus::Family<prometheus::Counter>* rpc_family_;
  prometheus::Family<prometheus::Gauge>* info_family_;
  std::array<prometheus::Counter*, kNumOps> requests_, bytes_in_, bytes_out_;
  std::array<prometheus::Histogram*, kNumOps> receive_hist_, queue_hist_, compute_hist_, send_hist_;
  prometheus::Gauge* queue_depth_gauge_;
  prometheus::Gauge* inflight_gauge_;
  prometheus::Gauge* inflight_bytes_gauge_;
  prometheus::Gauge* layers_gauge_;
  prometheus::Gauge* layer_bytes_gauge_;
  prometheus::Gauge* ready_gauge_;
  prometheus::Gauge* start_time_gauge_;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_STATS_H_
