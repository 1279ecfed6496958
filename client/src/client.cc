#include "atp/client/client.h"

#include <atomic>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client_core.h"
#include "op_call.h"

namespace atp::client {
namespace {

// Runs an async core call and waits for its result.
template <typename T, typename StartFn>
T Wait(StartFn start) {
  std::optional<T> result;
  absl::Notification done;
  start([&](T r) {
    result.emplace(std::move(r));
    done.Notify();
  });
  done.WaitForNotification();
  return *std::move(result);
}

}  // namespace

absl::string_view ReadinessName(Readiness readiness) {
  switch (readiness) {
    case Readiness::kUnknown:
      return "UNKNOWN";
    case Readiness::kServing:
      return "SERVING";
    case Readiness::kNotServing:
      return "NOT_SERVING";
  }
  return "UNKNOWN";
}

struct Client::ReadyState {
  absl::Mutex mu;
  Readiness readiness ABSL_GUARDED_BY(mu) = Readiness::kUnknown;
};

absl::StatusOr<std::unique_ptr<Client>> Client::Create(std::string target, ClientOptions options) {
  auto ready = std::make_shared<ReadyState>();
  absl::StatusOr<std::shared_ptr<internal::ClientCore>> core =
      internal::ClientCore::Create(std::move(target), options, nullptr, [ready](Readiness r) {
        absl::MutexLock lock(&ready->mu);
        ready->readiness = r;
      });
  if (!core.ok()) return core.status();
  return std::unique_ptr<Client>(new Client(*std::move(core), std::move(ready)));
}

// Bounds the Compute streams open at once (ClientOptions::max_concurrent_calls); calls beyond wait
// here in order and start as streams end.
struct Client::Limiter : std::enable_shared_from_this<Client::Limiter> {
  using Group = std::vector<std::unique_ptr<internal::OpCall>>;

  Limiter(std::shared_ptr<internal::ClientCore> core, int limit)
      : core(std::move(core)), limit(limit) {}

  void Submit(Group group) {
    auto remaining = std::make_shared<std::atomic<int>>(static_cast<int>(group.size()));
    std::weak_ptr<Limiter> weak = weak_from_this();
    for (auto& call : group) {
      call->on_attempt = [weak, remaining](std::unique_ptr<internal::OpCall> c,
                                           internal::OpOutcome o) {
        internal::FinishCall(std::move(c), std::move(o));
        if (remaining->fetch_sub(1) == 1) {
          if (auto self = weak.lock()) self->Release();
        }
      };
    }
    {
      absl::MutexLock lock(&mu);
      if (limit > 0 && active >= limit) {
        waiting.push_back(std::move(group));
        return;
      }
      ++active;
    }
    core->Submit(std::move(group));
  }

  void Release() {
    Group next;
    {
      absl::MutexLock lock(&mu);
      if (waiting.empty()) {
        --active;
        return;
      }
      next = std::move(waiting.front());
      waiting.pop_front();
    }
    core->Submit(std::move(next));
  }

  const std::shared_ptr<internal::ClientCore> core;
  const int limit;
  absl::Mutex mu;
  int active ABSL_GUARDED_BY(mu) = 0;
  std::deque<Group> waiting ABSL_GUARDED_BY(mu);
};

Client::Client(std::shared_ptr<internal::ClientCore> core, std::shared_ptr<ReadyState> ready)
    : core_(std::move(core)),
      ready_(std::move(ready)),
      limiter_(std::make_shared<Limiter>(core_, core_->options().max_concurrent_calls)) {}

Client::~Client() {
  core_->Shutdown();
  // Calls still waiting for a stream: Submit on a shut-down core fails them with CANCELLED.
  std::deque<Limiter::Group> waiting;
  {
    absl::MutexLock lock(&limiter_->mu);
    waiting.swap(limiter_->waiting);
  }
  for (auto& group : waiting) core_->Submit(std::move(group));
}

const std::string& Client::target() const { return core_->target(); }
const ClientOptions& Client::options() const { return core_->options(); }

Readiness Client::readiness() const { return core_->readiness(); }

absl::Status Client::WaitUntilReady(absl::Time deadline) {
  absl::MutexLock lock(&ready_->mu);
  auto serving = [this]() ABSL_SHARED_LOCKS_REQUIRED(ready_->mu) {
    return ready_->readiness == Readiness::kServing;
  };
  if (ready_->mu.AwaitWithDeadline(absl::Condition(&serving), deadline)) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("worker ", target(), " is not ready (", ReadinessName(ready_->readiness), ")"));
}

absl::Time Client::DeadlineOf(const CallOptions& options) const {
  if (options.deadline) return *options.deadline;
  return absl::Now() + core_->options().default_timeout;
}

bool Client::WaitForReadyDefault() const { return core_->options().wait_for_ready; }

void Client::Submit(std::vector<std::unique_ptr<internal::OpCall>> calls) {
  limiter_->Submit(std::move(calls));
}

absl::StatusOr<Readiness> Client::CheckHealth(absl::string_view service,
                                              const CallOptions& options) {
  return Wait<absl::StatusOr<Readiness>>(
      [&](auto done) { CheckHealthAsync(service, std::move(done), options); });
}

void Client::CheckHealthAsync(absl::string_view service, Callback<Readiness> callback,
                              const CallOptions& options) {
  core_->CheckHealthAsync(std::string(service), DeadlineOf(options),
                          options.wait_for_ready.value_or(WaitForReadyDefault()),
                          std::move(callback));
}

absl::StatusOr<ServerInfo> Client::GetServerInfo(const CallOptions& options) {
  return Wait<absl::StatusOr<ServerInfo>>(
      [&](auto done) { GetServerInfoAsync(std::move(done), options); });
}

void Client::GetServerInfoAsync(Callback<ServerInfo> callback, const CallOptions& options) {
  core_->GetServerInfoAsync(DeadlineOf(options),
                            options.wait_for_ready.value_or(WaitForReadyDefault()),
                            std::move(callback));
}

absl::StatusOr<WorkerStatistics> Client::GetStatistics(const CallOptions& options) {
  return Wait<absl::StatusOr<WorkerStatistics>>(
      [&](auto done) { GetStatisticsAsync(std::move(done), options); });
}

void Client::GetStatisticsAsync(Callback<WorkerStatistics> callback, const CallOptions& options) {
  core_->GetStatisticsAsync(DeadlineOf(options), std::move(callback));
}

absl::StatusOr<std::vector<RegisteredLayer>> Client::ListLayers(const CallOptions& options) {
  return Wait<absl::StatusOr<std::vector<RegisteredLayer>>>(
      [&](auto done) { ListLayersAsync(std::move(done), options); });
}

void Client::ListLayersAsync(Callback<std::vector<RegisteredLayer>> callback,
                             const CallOptions& options) {
  core_->ListLayersAsync(DeadlineOf(options), std::move(callback));
}

absl::StatusOr<RegisteredLayer> Client::RegisterLayerWithInfo(const LayerSpec& layer,
                                                              const CallOptions& options) {
  return Wait<absl::StatusOr<RegisteredLayer>>(
      [&](auto done) { RegisterLayerWithInfoAsync(layer, std::move(done), options); });
}

void Client::RegisterLayerWithInfoAsync(const LayerSpec& layer, Callback<RegisteredLayer> callback,
                                        const CallOptions& options) {
  core_->RegisterLayerAsync(layer, DeadlineOf(options),
                            options.wait_for_ready.value_or(WaitForReadyDefault()),
                            std::move(callback));
}

absl::Status Client::RegisterLayer(const LayerSpec& layer, const CallOptions& options) {
  return RegisterLayerWithInfo(layer, options).status();
}

void Client::RegisterLayerAsync(const LayerSpec& layer, StatusCallback callback,
                                const CallOptions& options) {
  RegisterLayerWithInfoAsync(
      layer,
      [callback = std::move(callback)](absl::StatusOr<RegisteredLayer> r) mutable {
        callback(r.status());
      },
      options);
}

absl::Status Client::RemoveLayer(absl::string_view layer_id, const CallOptions& options) {
  return Wait<absl::Status>(
      [&](auto done) { RemoveLayerAsync(layer_id, std::move(done), options); });
}

void Client::RemoveLayerAsync(absl::string_view layer_id, StatusCallback callback,
                              const CallOptions& options) {
  core_->RemoveLayerAsync(std::string(layer_id), DeadlineOf(options), std::move(callback));
}

}  // namespace atp::client
