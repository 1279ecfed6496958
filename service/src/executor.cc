#include "executor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace atp::service {

Executor::Executor(std::unique_ptr<kernels::Backend> backend, int max_queue_depth)
    : backend_(std::move(backend)), max_queue_depth_(max_queue_depth < 1 ? 1 : max_queue_depth) {
  thread_ = std::thread([this] { Run(); });
}

Executor::~Executor() {
  Shutdown();
  backend_.reset();
}

absl::Status Executor::Submit(Task task) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the worker is shutting down");
    if (static_cast<int>(queue_.size()) >= max_queue_depth_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the executor queue is full (", max_queue_depth_, " requests wait for the backend)"));
    }
    queue_.push_back(std::move(task));
    // Under the lock, so that the observer sees the depths in order.
    if (observer_) observer_(static_cast<int>(queue_.size()));
  }
  return absl::OkStatus();
}

int Executor::queue_depth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void Executor::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Executor::Run() {
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      if (observer_) observer_(static_cast<int>(queue_.size()));
    }
    task(*backend_);
  }
}

}  // namespace atp::service
