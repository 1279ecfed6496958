// The long-lived calls of a worker (Compute and RegisterLayer streams), so that draining can tell
// each to end when idle and wait, with a deadline, until all have. Thread-safe.
#ifndef ATP_SERVICE_CALL_TRACKER_H_
#define ATP_SERVICE_CALL_TRACKER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace atp::service {

class DrainableCall {
 public:
  virtual ~DrainableCall() = default;
  // The worker is draining: finish the work already admitted, refuse more, end when idle.
  virtual void OnDrain() = 0;
  // The drain timeout ran out: end the call now (its running work is cancelled).
  virtual void OnStop() = 0;
  // Periodic: refuse work whose deadline passed while it waited for input (a stalled client).
  virtual void OnSweep(absl::Time now) = 0;
};

class CallTracker {
 public:
  // Registers a live call; returns its id for Remove.
  uint64_t Add(std::weak_ptr<DrainableCall> call) {
    absl::MutexLock lock(&mu_);
    const uint64_t id = next_id_++;
    calls_.emplace(id, std::move(call));
    return id;
  }

  void Remove(uint64_t id) {
    absl::MutexLock lock(&mu_);
    calls_.erase(id);
  }

  int size() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(calls_.size());
  }

  // Tells every live call to drain (outside the lock: calls may Remove themselves meanwhile).
  void DrainAll() {
    for (auto& call : Live()) call->OnDrain();
  }

  // Sweeps every live call (see DrainableCall::OnSweep).
  void SweepAll(absl::Time now) {
    for (auto& call : Live()) call->OnSweep(now);
  }

  // Tells every live call to stop at once.
  void StopAll() {
    for (auto& call : Live()) call->OnStop();
  }

  // Waits until no call is live or `deadline` passes; true when none is live.
  bool WaitIdle(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_.empty(); };
    return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  }

 private:
  std::vector<std::shared_ptr<DrainableCall>> Live() {
    std::vector<std::shared_ptr<DrainableCall>> live;
    absl::MutexLock lock(&mu_);
    for (auto& [id, weak] : calls_) {
      if (auto call = weak.lock()) live.push_back(std::move(call));
    }
    return live;
  }

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::weak_ptr<DrainableCall>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace atp::service

#endif  // ATP_SERVICE_CALL_TRACKER_H_
