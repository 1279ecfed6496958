// What every RPC handler of a worker shares: limits, the executor, the layer registry, statistics,
// the token check, the in-flight budget and the draining flags. Owned by WorkerServer; handlers
// borrow it. Thread-safe (each member says how).
#ifndef ATP_SERVICE_WORKER_CORE_H_
#define ATP_SERVICE_WORKER_CORE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "compute_plan.h"
#include "convert.h"
#include "executor.h"
#include "layer_registry.h"
#include "payload_pool.h"
#include "stats.h"
#include "token_check.h"

namespace atp::service {

// Requests admitted and not yet answered, over all streams, and the payload bytes they reserved.
// Thread-safe.
class InflightBudget {
 public:
  InflightBudget(int max_requests, uint64_t max_bytes, Stats* stats)
      : max_requests_(max_requests), max_bytes_(max_bytes), stats_(stats) {}

  // Admits one request that needs `bytes`; RESOURCE_EXHAUSTED naming the limit otherwise.
  absl::Status Admit(uint64_t bytes) {
    int n;
    uint64_t b;
    {
      absl::MutexLock lock(&mu_);
      if (requests_ >= max_requests_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("the worker has ", requests_,
                         " requests in flight, the limit (max_inflight_requests)"));
      }
      if (bytes > max_bytes_ || bytes_ > max_bytes_ - bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("the request needs ", bytes, " bytes for its inputs and outputs, but ",
                         bytes_, " of the ", max_bytes_,
                         " bytes for payloads in flight are in use (max_inflight_bytes)"));
      }
      n = ++requests_;
      b = (bytes_ += bytes);
    }
    stats_->SetInflight(n, b);
    return absl::OkStatus();
  }

  // Returns part of a request's bytes early (its inputs after compute).
  void ReleaseBytes(uint64_t bytes) { Update(0, bytes); }
  // Ends a request, returning its remaining bytes.
  void Release(uint64_t bytes) { Update(1, bytes); }

 private:
  void Update(int requests, uint64_t bytes) {
    int n;
    uint64_t b;
    {
      absl::MutexLock lock(&mu_);
      requests_ -= requests;
      bytes_ -= bytes;
      n = requests_;
      b = bytes_;
    }
    stats_->SetInflight(n, b);
  }

  const int max_requests_;
  const uint64_t max_bytes_;
  Stats* const stats_;
  absl::Mutex mu_;
  int requests_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

struct WorkerCore {
  WorkerCore(const WorkerLimits& l, int max_queue_depth, uint64_t max_inflight_bytes,
             const ServerDescription& d, Executor* e, LayerRegistry* r, Stats* s,
             const TokenCheck* t)
      : limits(l),
        description(d),
        max_queue_depth(max_queue_depth),
        executor(e),
        registry(r),
        stats(s),
        token(t),
        inflight(l.max_inflight_requests, max_inflight_bytes, s),
        payload_pool(std::min<uint64_t>(max_inflight_bytes, kMaxCachedPayloadBytes)) {}

  // Released payload buffers kept for reuse, at most this many bytes (and at most
  // max_inflight_bytes).
  static constexpr uint64_t kMaxCachedPayloadBytes = uint64_t{1} << 30;

  const WorkerLimits limits;
  const ServerDescription description;
  const int max_queue_depth;
  Executor* const executor;
  LayerRegistry* const registry;
  Stats* const stats;
  // nullptr when no token is required.
  const TokenCheck* const token;
  InflightBudget inflight;
  // Input buffers of compute requests.
  PayloadPool payload_pool;
  // Set by SIGTERM: readiness is NOT_SERVING, new requests are refused, streams end when idle.
  std::atomic<bool> draining{false};
  // Set when the drain timeout ran out: running work is cancelled at its next check.
  std::atomic<bool> stopping{false};
  // The backend's last health() result was OK.
  std::atomic<bool> backend_healthy{true};
};

}  // namespace atp::service

#endif  // ATP_SERVICE_WORKER_CORE_H_
