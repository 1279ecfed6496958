// A thread that runs callbacks at given times: health-watch restarts, the deadlines of requests
// waiting in a pool, hand-backs that must leave gRPC's threads. Callbacks run on the timer's
// thread, one at a time, and must be short. The last reference may be dropped from a callback.
// Thread-safe.
#ifndef ATP_CLIENT_SRC_TIMER_QUEUE_H_
#define ATP_CLIENT_SRC_TIMER_QUEUE_H_

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"

namespace atp::client::internal {

class TimerQueue {
 public:
  TimerQueue();
  // Stops the thread; callbacks not yet run are dropped.
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `fn` at `when` (at once when it has passed). Returns an id for Cancel.
  uint64_t Schedule(absl::Time when, absl::AnyInvocable<void()> fn);
  // Drops a callback that has not started; false when it already ran, is running or is unknown.
  bool Cancel(uint64_t id);

 private:
  struct State;
  static void Loop(std::shared_ptr<State> state);

  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_TIMER_QUEUE_H_
