#include "timer_queue.h"

#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace atp::client::internal {

struct TimerQueue::State {
  absl::Mutex mu;
  bool stop ABSL_GUARDED_BY(mu) = false;
  uint64_t next_id ABSL_GUARDED_BY(mu) = 1;
  // Ordered by (time, id).
  std::map<std::pair<absl::Time, uint64_t>, absl::AnyInvocable<void()>> timers ABSL_GUARDED_BY(mu);
  std::map<uint64_t, absl::Time> when ABSL_GUARDED_BY(mu);
};

TimerQueue::TimerQueue()
    : state_(std::make_shared<State>()), thread_([state = state_] { Loop(state); }) {}

TimerQueue::~TimerQueue() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stop = true;
  }
  // The last reference may go from a callback on the timer's own thread: the loop then ends by
  // itself (it holds the state).
  if (std::this_thread::get_id() == thread_.get_id()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

uint64_t TimerQueue::Schedule(absl::Time when, absl::AnyInvocable<void()> fn) {
  absl::MutexLock lock(&state_->mu);
  const uint64_t id = state_->next_id++;
  state_->timers.emplace(std::make_pair(when, id), std::move(fn));
  state_->when.emplace(id, when);
  return id;
}

bool TimerQueue::Cancel(uint64_t id) {
  absl::AnyInvocable<void()> dropped;  // destroyed outside the lock
  absl::MutexLock lock(&state_->mu);
  auto it = state_->when.find(id);
  if (it == state_->when.end()) return false;
  auto node = state_->timers.extract(std::make_pair(it->second, id));
  dropped = std::move(node.mapped());
  state_->when.erase(it);
  return true;
}

void TimerQueue::Loop(std::shared_ptr<State> state) {
  State* s = state.get();
  s->mu.Lock();
  while (!s->stop) {
    if (s->timers.empty()) {
      s->mu.Await(absl::Condition(
          +[](State* st) ABSL_NO_THREAD_SAFETY_ANALYSIS { return st->stop || !st->timers.empty(); },
          s));
      continue;
    }
    const absl::Time first = s->timers.begin()->first.first;
    if (absl::Now() < first) {
      // Wakes up early when an earlier timer is scheduled, the first is cancelled, or on stop.
      struct Args {
        State* st;
        uint64_t first_id;
      } args{s, s->timers.begin()->first.second};
      s->mu.AwaitWithDeadline(absl::Condition(
                                  +[](Args* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                    return a->st->stop || a->st->timers.empty() ||
                                           a->st->timers.begin()->first.second != a->first_id;
                                  },
                                  &args),
                              first);
      continue;
    }
    auto node = s->timers.extract(s->timers.begin());
    s->when.erase(node.key().second);
    absl::AnyInvocable<void()> fn = std::move(node.mapped());
    s->mu.Unlock();
    fn();
    fn = nullptr;  // whatever it captured goes before the lock is taken again
    s->mu.Lock();
  }
  // Callbacks not run are dropped here, outside the lock.
  auto timers = std::move(s->timers);
  s->mu.Unlock();
  timers.clear();
}

}  // namespace atp::client::internal
