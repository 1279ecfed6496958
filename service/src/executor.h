// The executor: the one owner of the compute backend. gRPC threads only validate, convert and hand
// work over; every backend call (layer loads and compute) runs here, one at a time, in FIFO order,
// on a dedicated thread. The queue is bounded: a full queue is RESOURCE_EXHAUSTED, never a wait.
//
// Thread-safe. backend() may be used from any thread for the calls the Backend seam declares
// thread-safe (name, device_description, memory, health).
#ifndef ATP_SERVICE_EXECUTOR_H_
#define ATP_SERVICE_EXECUTOR_H_

#include <deque>
#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "atp/kernels/backend.h"

namespace atp::service {

class Executor {
 public:
  using Task = std::function<void(kernels::Backend&)>;

  // max_queue_depth >= 1: tasks waiting (not counting the one running).
  Executor(std::unique_ptr<kernels::Backend> backend, int max_queue_depth);
  // Shuts down, then destroys the backend.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `task`. RESOURCE_EXHAUSTED when max_queue_depth tasks wait already; UNAVAILABLE after
  // Shutdown().
  absl::Status Submit(Task task);

  // Tasks waiting now.
  int queue_depth() const;
  // Called with the new depth whenever it changes, under the executor's lock (so it must not call
  // back into the executor). Set before the first Submit.
  void set_depth_observer(std::function<void(int)> observer) { observer_ = std::move(observer); }

  // Stops accepting tasks, runs every queued task, joins the thread. Idempotent.
  void Shutdown();

  kernels::Backend& backend() const { return *backend_; }

 private:
  void Run();

  std::unique_ptr<kernels::Backend> backend_;
  const int max_queue_depth_;
  std::function<void(int)> observer_;
  mutable absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_EXECUTOR_H_
