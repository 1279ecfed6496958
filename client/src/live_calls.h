// The call objects of a ClientCore, so that Shutdown can cancel them all and wait until every one
// has been destroyed. A call registers when it starts and removes itself in its destructor, after
// releasing its grpc::ClientContext: the context holds the channel, and gRPC 1.51 must not see the
// last reference to a channel go on one of its callback threads (its shared callback completion
// queue would shut down from its own thread; grpc/grpc#32584). Calls are held weakly: a call keeps
// itself alive until gRPC is done with it. Thread-safe.
#ifndef ATP_CLIENT_SRC_LIVE_CALLS_H_
#define ATP_CLIENT_SRC_LIVE_CALLS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace atp::client::internal {

class CancellableCall {
 public:
  virtual ~CancellableCall() = default;
  // Asks gRPC to cancel the call (its completion runs later, or inline).
  virtual void Cancel() = 0;
};

class LiveCalls {
 public:
  // Registers a call; 0 after Close() (the caller must then not start it).
  uint64_t Add(std::weak_ptr<CancellableCall> call) {
    absl::MutexLock lock(&mu_);
    if (closed_) return 0;
    const uint64_t id = next_id_++;
    calls_.emplace(id, std::move(call));
    return id;
  }

  void Remove(uint64_t id) {
    absl::MutexLock lock(&mu_);
    calls_.erase(id);
  }

  // Refuses new calls, cancels the live ones (outside the lock: completions may run inline) and
  // waits up to `timeout` until all have been destroyed. True when all have.
  bool CloseAndWait(absl::Duration timeout) {
    std::vector<std::shared_ptr<CancellableCall>> live;
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      for (auto& [id, weak] : calls_) {
        if (auto call = weak.lock()) live.push_back(std::move(call));
      }
    }
    for (auto& call : live) call->Cancel();
    live.clear();
    absl::MutexLock lock(&mu_);
    auto empty = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return calls_.empty(); };
    return mu_.AwaitWithTimeout(absl::Condition(&empty), timeout);
  }

  bool closed() const {
    absl::MutexLock lock(&mu_);
    return closed_;
  }

 private:
  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::weak_ptr<CancellableCall>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_LIVE_CALLS_H_
