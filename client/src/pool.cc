#include "atp/client/pool.h"

#include <algorithm>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client_core.h"
#include "op_call.h"
#include "resolver.h"
#include "timer_queue.h"

namespace atp::client {

using internal::ClientCore;
using internal::OpCall;
using internal::OpOutcome;

namespace {

// Failures after which the worker itself is in doubt (rather than just this request on it).
bool IsWorkerFailure(const OpOutcome& o) {
  switch (o.status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kFailedPrecondition:
      return true;
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return !o.in_band;
    default:
      return false;
  }
}

}  // namespace

struct Pool::Impl : std::enable_shared_from_this<Pool::Impl> {
  struct Worker {
    std::string address;      // for people and as the key
    std::string grpc_target;  // what the core connects to
    std::string source;       // the target it came from
    std::shared_ptr<ClientCore> core;
    Readiness readiness = Readiness::kUnknown;
    bool suspect = false;
    bool retired = false;
    int inflight = 0;
    uint64_t completed = 0;
    uint64_t failed = 0;
  };
  struct LayerEntry {
    LayerSpec spec;
    bool everywhere = true;
    int replicas = 0;
    std::set<std::string> placed;
  };
  struct Pending {
    std::unique_ptr<OpCall> call;
    std::set<std::string> excluded;
    absl::Status last_error;
    uint64_t timer_id = 0;
  };
  struct Launch {
    std::shared_ptr<ClientCore> core;
    std::unique_ptr<OpCall> call;
  };
  struct Finish {
    std::unique_ptr<OpCall> call;
    OpOutcome outcome;
  };
  struct Work {
    std::vector<Launch> launches;
    std::vector<Finish> finishes;
  };

  explicit Impl(PoolOptions o)
      : options(std::move(o)), timer(std::make_shared<internal::TimerQueue>()) {}

  const PoolOptions options;
  const std::shared_ptr<internal::TimerQueue> timer;
  std::vector<std::pair<std::string, internal::DnsTarget>> dns_targets;

  mutable absl::Mutex mu;
  bool shutdown ABSL_GUARDED_BY(mu) = false;
  std::map<std::string, std::shared_ptr<Worker>> workers ABSL_GUARDED_BY(mu);
  std::map<std::string, LayerEntry> layers ABSL_GUARDED_BY(mu);
  std::map<uint64_t, Pending> pending ABSL_GUARDED_BY(mu);
  uint64_t next_sequence ABSL_GUARDED_BY(mu) = 1;
  uint64_t rotation ABSL_GUARDED_BY(mu) = 0;
  bool resolve_now ABSL_GUARDED_BY(mu) = false;
  absl::Time last_resolve ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  std::thread resolver;

  // ---- workers ---------------------------------------------------------------------------------

  absl::StatusOr<std::shared_ptr<Worker>> MakeWorker(std::string address, std::string grpc_target,
                                                     std::string source,
                                                     const std::string& tls_name) {
    ClientOptions copt = options.client;
    copt.watch_health = true;
    if (copt.tls.active() && copt.tls.server_name_override.empty()) {
      copt.tls.server_name_override = tls_name;
    }
    std::weak_ptr<Impl> weak = weak_from_this();
    auto w = std::make_shared<Worker>();
    w->address = address;
    w->grpc_target = grpc_target;
    w->source = std::move(source);
    absl::StatusOr<std::shared_ptr<ClientCore>> core = ClientCore::Create(
        std::move(grpc_target), copt, timer,
        [weak, address](Readiness r) {
          if (auto self = weak.lock()) self->OnReadiness(address, r);
        },
        address);
    if (!core.ok()) return core.status();
    w->core = *std::move(core);
    return w;
  }

  void AddWorkerLocked(std::shared_ptr<Worker> w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    w->readiness = w->core->readiness();  // a report may have come before it was in the map
    for (auto& [id, layer] : layers) {
      if (layer.everywhere || static_cast<int>(PlacedLiveLocked(layer).size()) < layer.replicas) {
        layer.placed.insert(w->address);
        w->core->RememberLayer(layer.spec);
      }
    }
    workers[w->address] = std::move(w);
  }

  std::vector<std::string> PlacedLiveLocked(const LayerEntry& layer) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<std::string> out;
    for (const std::string& a : layer.placed) {
      auto it = workers.find(a);
      if (it != workers.end() && !it->second->retired) out.push_back(a);
    }
    return out;
  }

  void OnReadiness(const std::string& address, Readiness r) {
    Work work;
    {
      absl::MutexLock lock(&mu);
      auto it = workers.find(address);
      if (it == workers.end()) return;
      it->second->readiness = r;
      if (r == Readiness::kServing) it->second->suspect = false;
      PumpLocked(&work);
    }
    Run(std::move(work));
  }

  static bool Usable(const Worker& w) {
    return !w.retired && !w.suspect && w.readiness == Readiness::kServing;
  }

  std::string DescribeWorkersLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (workers.empty()) return "the pool has no workers";
    std::vector<std::string> parts;
    for (const auto& [a, w] : workers) {
      if (w->retired) continue;
      parts.push_back(absl::StrCat(a, " ", ReadinessName(w->readiness),
                                   w->suspect ? " (unreachable)" : "", ", ", w->inflight,
                                   " in flight"));
    }
    return absl::StrCat("workers: ", absl::StrJoin(parts, "; "));
  }

  // ---- scheduling ------------------------------------------------------------------------------

  enum class Choice { kRun, kWait, kFail };

  // Picks a worker for `p`, placing its layer on another worker when none of its own is usable.
  Choice ChooseLocked(Pending& p, std::shared_ptr<Worker>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    LayerEntry* layer = nullptr;
    if (!p.call->layer_id.empty()) {
      auto it = layers.find(p.call->layer_id);
      if (it != layers.end()) layer = &it->second;
    }
    const int max_inflight = std::max(options.max_inflight_per_worker, 1);
    std::vector<std::shared_ptr<Worker>> order;
    order.reserve(workers.size());
    for (const auto& [a, w] : workers) order.push_back(w);
    if (!order.empty()) {
      std::rotate(order.begin(), order.begin() + (rotation % order.size()), order.end());
    }
    auto pick = [&](bool placed_only) -> std::shared_ptr<Worker> {
      std::shared_ptr<Worker> best;
      for (const auto& w : order) {
        if (!Usable(*w) || p.excluded.contains(w->address) || w->inflight >= max_inflight) {
          continue;
        }
        if (placed_only && layer != nullptr && !layer->everywhere &&
            !layer->placed.contains(w->address)) {
          continue;
        }
        if (best == nullptr || w->inflight < best->inflight) best = w;
      }
      return best;
    };
    if (auto w = pick(/*placed_only=*/true)) {
      *out = w;
      return Choice::kRun;
    }
    if (layer != nullptr && !layer->everywhere) {
      bool placed_usable = false;
      for (const std::string& a : layer->placed) {
        auto it = workers.find(a);
        if (it != workers.end() && Usable(*it->second) && !p.excluded.contains(a)) {
          placed_usable = true;
        }
      }
      if (!placed_usable) {
        if (auto w = pick(/*placed_only=*/false)) {
          layer->placed.insert(w->address);
          w->core->RememberLayer(layer->spec);
          *out = w;
          return Choice::kRun;
        }
      }
    }
    // Nothing free now: wait when some worker may take it later.
    if (!dns_targets.empty()) return Choice::kWait;  // workers may still appear
    for (const auto& [a, w] : workers) {
      if (!w->retired && !p.excluded.contains(a)) return Choice::kWait;
    }
    return Choice::kFail;
  }

  void PumpLocked(Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (shutdown) return;
    for (auto it = pending.begin(); it != pending.end();) {
      std::shared_ptr<Worker> w;
      const Choice choice = ChooseLocked(it->second, &w);
      if (choice == Choice::kWait) {
        ++it;
        continue;
      }
      Pending p = std::move(it->second);
      it = pending.erase(it);
      if (p.timer_id != 0) timer->Cancel(p.timer_id);
      if (choice == Choice::kFail) {
        OpOutcome o;
        o.status = p.last_error.ok()
                       ? absl::UnavailableError(absl::StrCat("no worker can take the request; ",
                                                             DescribeWorkersLocked()))
                       : p.last_error;
        work->finishes.push_back({std::move(p.call), std::move(o)});
        continue;
      }
      ++w->inflight;
      ++rotation;
      std::shared_ptr<Impl> self = shared_from_this();
      const std::string address = w->address;
      auto excluded = std::make_shared<std::set<std::string>>(std::move(p.excluded));
      p.call->on_attempt = [self, address, excluded](std::unique_ptr<OpCall> call,
                                                     OpOutcome outcome) {
        self->OnAttempt(address, std::move(*excluded), std::move(call), std::move(outcome));
      };
      work->launches.push_back({w->core, std::move(p.call)});
    }
  }

  void EnqueueLocked(Pending p, Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    OpCall& call = *p.call;
    if (call.sequence == 0) call.sequence = next_sequence++;
    if (absl::Now() >= call.deadline) {
      OpOutcome o;
      o.status = absl::DeadlineExceededError(absl::StrCat(
          "the deadline passed before a worker could take the request",
          p.last_error.ok() ? "" : absl::StrCat("; last error: ", p.last_error.message())));
      work->finishes.push_back({std::move(p.call), std::move(o)});
      return;
    }
    const uint64_t seq = call.sequence;
    if (call.deadline != absl::InfiniteFuture()) {
      std::weak_ptr<Impl> weak = weak_from_this();
      p.timer_id = timer->Schedule(call.deadline, [weak, seq] {
        if (auto self = weak.lock()) self->OnExpired(seq);
      });
    }
    pending.emplace(seq, std::move(p));
  }

  void OnExpired(uint64_t seq) {
    Work work;
    {
      absl::MutexLock lock(&mu);
      auto it = pending.find(seq);
      if (it == pending.end()) return;
      Pending p = std::move(it->second);
      pending.erase(it);
      OpOutcome o;
      o.status = absl::DeadlineExceededError(absl::StrCat(
          "no worker could take the request before its deadline (", DescribeWorkersLocked(), ")",
          p.last_error.ok() ? "" : absl::StrCat("; last error: ", p.last_error.message())));
      work.finishes.push_back({std::move(p.call), std::move(o)});
    }
    Run(std::move(work));
  }

  void OnAttempt(const std::string& address, std::set<std::string> excluded,
                 std::unique_ptr<OpCall> call, OpOutcome outcome) {
    Work work;
    std::shared_ptr<ClientCore> refresh;
    bool resolve = false;
    {
      absl::MutexLock lock(&mu);
      auto it = workers.find(address);
      Worker* w = it == workers.end() ? nullptr : it->second.get();
      if (w != nullptr) --w->inflight;
      if (outcome.status.ok()) {
        if (w != nullptr) ++w->completed;
        work.finishes.push_back({std::move(call), std::move(outcome)});
      } else {
        if (w != nullptr) ++w->failed;
        const bool replay = !shutdown && internal::IsRetryable(outcome) &&
                            call->attempts < options.max_attempts && absl::Now() < call->deadline;
        if (!replay) {
          work.finishes.push_back({std::move(call), std::move(outcome)});
        } else {
          Pending p;
          p.call = std::move(call);
          p.excluded = std::move(excluded);
          p.last_error = absl::Status(
              outcome.status.code(),
              absl::StrCat(outcome.status.message(), " (attempt ", p.call->attempts, ")"));
          if (IsWorkerFailure(outcome)) {
            if (w != nullptr && !w->suspect) {
              w->suspect = true;
              refresh = w->core;
              resolve = internal::IsDnsTarget(w->source);
            }
          } else {
            p.excluded.insert(address);
          }
          EnqueueLocked(std::move(p), &work);
        }
      }
      PumpLocked(&work);
      if (resolve) resolve_now = true;
    }
    if (refresh) refresh->RefreshHealth();
    Run(std::move(work));
  }

  void Submit(std::vector<std::unique_ptr<OpCall>> calls) {
    Work work;
    {
      absl::MutexLock lock(&mu);
      for (auto& call : calls) {
        if (shutdown) {
          OpOutcome o;
          o.status = absl::CancelledError("the pool is shut down");
          work.finishes.push_back({std::move(call), std::move(o)});
          continue;
        }
        Pending p;
        p.call = std::move(call);
        EnqueueLocked(std::move(p), &work);
      }
      PumpLocked(&work);
    }
    Run(std::move(work));
  }

  static void Run(Work work) {
    for (Launch& l : work.launches) {
      std::vector<std::unique_ptr<OpCall>> one;
      one.push_back(std::move(l.call));
      l.core->Submit(std::move(one));
    }
    for (Finish& f : work.finishes) internal::FinishCall(std::move(f.call), std::move(f.outcome));
  }

  // ---- layers ----------------------------------------------------------------------------------

  void RegisterLayerAsync(const LayerSpec& spec, const Placement& placement, absl::Time deadline,
                          StatusCallback callback) {
    std::vector<std::shared_ptr<ClientCore>> remember, targets;
    bool wait = false;
    absl::Status refused;
    {
      absl::MutexLock lock(&mu);
      auto existing = layers.find(spec.id());
      if (shutdown) {
        refused = absl::CancelledError("the pool is shut down");
      } else if (existing != layers.end() && existing->second.spec.digest() != spec.digest()) {
        refused = absl::AlreadyExistsError(absl::StrCat(
            "layer ", spec.id(), " is registered in this pool with other content (", "digest ",
            existing->second.spec.digest(), ", this one ", spec.digest(), "); remove it first"));
      } else {
        LayerEntry& e = layers.emplace(spec.id(), LayerEntry{spec}).first->second;
        e.spec = spec;
        e.everywhere = placement.replicas <= 0;
        e.replicas = placement.replicas;
        std::set<std::string> placed;
        if (e.everywhere) {
          for (const auto& [a, w] : workers) {
            if (!w->retired) placed.insert(a);
          }
        } else {
          for (const std::string& a : PlacedLiveLocked(e)) {
            if (static_cast<int>(placed.size()) < e.replicas) placed.insert(a);
          }
          // Fill up with the least-burdened workers, ready ones first.
          std::map<std::string, int> burden;
          for (const auto& [id, l] : layers) {
            for (const std::string& a : l.placed) ++burden[a];
          }
          std::vector<std::shared_ptr<Worker>> candidates;
          for (const auto& [a, w] : workers) {
            if (!w->retired && !placed.contains(a)) candidates.push_back(w);
          }
          std::stable_sort(candidates.begin(), candidates.end(), [&](const auto& x, const auto& y) {
            if (Usable(*x) != Usable(*y)) return Usable(*x);
            return burden[x->address] < burden[y->address];
          });
          for (const auto& w : candidates) {
            if (static_cast<int>(placed.size()) >= e.replicas) break;
            placed.insert(w->address);
          }
        }
        e.placed = std::move(placed);
        for (const std::string& a : e.placed) {
          const auto& w = workers.at(a);
          remember.push_back(w->core);
          if (Usable(*w)) targets.push_back(w->core);
        }
        if (targets.empty()) {
          targets = remember;
          wait = true;
        }
        if (targets.empty()) {
          refused = absl::UnavailableError(
              absl::StrCat("no worker to register layer ", spec.id(),
                           " on yet; it is kept and registered when workers appear"));
        }
      }
    }
    if (!refused.ok()) {
      callback(refused);
      return;
    }
    for (const auto& core : remember) core->RememberLayer(spec);
    // Completes when every target answered, or at the first success when waiting for one.
    struct Join {
      absl::Mutex mu;
      int pending ABSL_GUARDED_BY(mu) = 0;
      bool done ABSL_GUARDED_BY(mu) = false;
      bool any_ok ABSL_GUARDED_BY(mu) = false;
      absl::Status error ABSL_GUARDED_BY(mu);
      bool first_success = false;
      StatusCallback callback;
    };
    auto join = std::make_shared<Join>();
    join->pending = static_cast<int>(targets.size());
    join->first_success = wait;
    join->callback = std::move(callback);
    for (const auto& core : targets) {
      core->RegisterLayerAsync(spec, deadline, wait, [join](absl::StatusOr<RegisteredLayer> r) {
        StatusCallback run;
        absl::Status result;
        {
          absl::MutexLock lock(&join->mu);
          --join->pending;
          if (r.ok()) {
            join->any_ok = true;
          } else if (join->error.ok() || (join->error.code() == absl::StatusCode::kUnavailable &&
                                          r.status().code() != absl::StatusCode::kUnavailable)) {
            join->error = r.status();  // keep the most telling error
          }
          if (join->done) return;
          if ((join->first_success && join->any_ok) || join->pending == 0) {
            join->done = true;
            run = std::move(join->callback);
            result = join->any_ok && (join->first_success || join->error.ok() ||
                                      join->error.code() == absl::StatusCode::kUnavailable)
                         ? absl::OkStatus()
                         : join->error;
          }
        }
        if (run) run(result);
      });
    }
  }

  void Shutdown() {
    std::vector<Pending> drained;
    std::vector<std::shared_ptr<Worker>> all;
    {
      absl::MutexLock lock(&mu);
      if (shutdown) return;
      shutdown = true;
      for (auto& [seq, p] : pending) drained.push_back(std::move(p));
      pending.clear();
      for (auto& [a, w] : workers) all.push_back(w);
    }
    if (resolver.joinable()) resolver.join();
    for (Pending& p : drained) {
      if (p.timer_id != 0) timer->Cancel(p.timer_id);
      OpOutcome o;
      o.status = absl::CancelledError("the pool is shut down");
      internal::FinishCall(std::move(p.call), std::move(o));
    }
    for (auto& w : all) w->core->Shutdown();
  }

  // ---- resolution ------------------------------------------------------------------------------

  void ResolverLoop() {
    mu.Lock();
    while (!shutdown) {
      bool live = false;
      for (const auto& [a, w] : workers) live = live || !w->retired;
      const absl::Time earliest = last_resolve + options.resolve_min_interval;
      const absl::Time due = resolve_now ? earliest
                                         : last_resolve + (live ? options.resolve_interval
                                                                : options.resolve_min_interval);
      if (absl::Now() < due) {
        struct Wake {
          Impl* impl;
          bool was_resolve_now;
        } wake{this, resolve_now};
        mu.AwaitWithDeadline(absl::Condition(
                                 +[](Wake* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                   return w->impl->shutdown ||
                                          w->impl->resolve_now != w->was_resolve_now;
                                 },
                                 &wake),
                             due);
        continue;
      }
      resolve_now = false;
      last_resolve = absl::Now();
      mu.Unlock();
      ResolveAll();
      mu.Lock();
    }
    mu.Unlock();
  }

  void ResolveAll() {
    for (const auto& [source, target] : dns_targets) {
      absl::StatusOr<std::vector<internal::ResolvedAddress>> addrs = internal::Resolve(target);
      if (!addrs.ok()) continue;  // keep what we have through a resolver hiccup
      Reconcile(source, target.host, *addrs);
    }
  }

  void Reconcile(const std::string& source, const std::string& host,
                 const std::vector<internal::ResolvedAddress>& addrs) {
    std::vector<internal::ResolvedAddress> fresh;
    {
      absl::MutexLock lock(&mu);
      if (shutdown) return;
      std::set<std::string> seen;
      for (const auto& a : addrs) {
        seen.insert(a.display);
        auto it = workers.find(a.display);
        if (it == workers.end()) {
          fresh.push_back(a);
        } else {
          it->second->retired = false;
        }
      }
      for (auto& [a, w] : workers) {
        if (w->source == source && !seen.contains(a)) w->retired = true;
      }
    }
    std::vector<std::shared_ptr<Worker>> made;
    for (const auto& a : fresh) {
      absl::StatusOr<std::shared_ptr<Worker>> w =
          MakeWorker(a.display, a.grpc_target, source, host);
      if (w.ok()) made.push_back(*std::move(w));
    }
    Work work;
    std::vector<std::shared_ptr<Worker>> gone;
    {
      absl::MutexLock lock(&mu);
      if (shutdown) {
        gone = std::move(made);
      } else {
        for (auto& w : made) AddWorkerLocked(std::move(w));
        for (auto it = workers.begin(); it != workers.end();) {
          if (it->second->retired && it->second->inflight == 0) {
            gone.push_back(it->second);
            for (auto& [id, l] : layers) l.placed.erase(it->first);
            it = workers.erase(it);
          } else {
            ++it;
          }
        }
        PumpLocked(&work);
      }
    }
    for (auto& w : gone) w->core->Shutdown();
    Run(std::move(work));
  }
};

absl::StatusOr<std::unique_ptr<Pool>> Pool::Create(std::vector<std::string> targets,
                                                   PoolOptions options) {
  if (targets.empty()) return absl::InvalidArgumentError("a pool needs at least one target");
  auto impl = std::make_shared<Impl>(std::move(options));
  std::vector<std::string> statics;
  for (const std::string& t : targets) {
    if (internal::IsDnsTarget(t)) {
      absl::StatusOr<internal::DnsTarget> dns = internal::ParseDnsTarget(t);
      if (!dns.ok()) return dns.status();
      impl->dns_targets.emplace_back(t, *dns);
    } else {
      statics.push_back(t);
    }
  }
  std::vector<std::shared_ptr<Impl::Worker>> made;
  for (const std::string& t : statics) {
    const size_t colon = t.rfind(':');
    auto w = impl->MakeWorker(t, t, t, colon == std::string::npos ? t : t.substr(0, colon));
    if (!w.ok()) {
      for (auto& m : made) m->core->Shutdown();
      return w.status();
    }
    made.push_back(*std::move(w));
  }
  {
    absl::MutexLock lock(&impl->mu);
    for (auto& w : made) impl->AddWorkerLocked(std::move(w));
  }
  if (!impl->dns_targets.empty()) {
    {
      absl::MutexLock lock(&impl->mu);
      impl->last_resolve = absl::Now();
    }
    impl->ResolveAll();
    impl->resolver = std::thread([raw = impl.get()] { raw->ResolverLoop(); });
  }
  return std::unique_ptr<Pool>(new Pool(std::move(impl)));
}

Pool::Pool(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Pool::~Pool() { impl_->Shutdown(); }

const PoolOptions& Pool::options() const { return impl_->options; }

absl::Status Pool::WaitUntilReady(int min_workers, absl::Time deadline) {
  Impl& impl = *impl_;
  absl::MutexLock lock(&impl.mu);
  auto ready = [&impl, min_workers]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    int n = 0;
    for (const auto& [a, w] : impl.workers) n += Impl::Usable(*w) ? 1 : 0;
    return n >= min_workers;
  };
  if (impl.mu.AwaitWithDeadline(absl::Condition(&ready), deadline)) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(
      "fewer than ", min_workers, " workers are ready (", impl.DescribeWorkersLocked(), ")"));
}

std::vector<Pool::WorkerState> Pool::Workers() const {
  absl::MutexLock lock(&impl_->mu);
  std::vector<WorkerState> out;
  for (const auto& [a, w] : impl_->workers) {
    if (w->retired) continue;
    out.push_back({a, w->readiness, w->suspect, w->inflight, w->completed, w->failed});
  }
  return out;
}

std::vector<std::string> Pool::PlacementOf(absl::string_view layer_id) const {
  absl::MutexLock lock(&impl_->mu);
  auto it = impl_->layers.find(std::string(layer_id));
  if (it == impl_->layers.end()) return {};
  if (it->second.everywhere) {
    std::vector<std::string> all;
    for (const auto& [a, w] : impl_->workers) {
      if (!w->retired) all.push_back(a);
    }
    return all;
  }
  return impl_->PlacedLiveLocked(it->second);
}

absl::Time Pool::DeadlineOf(const CallOptions& options) const {
  if (options.deadline) return *options.deadline;
  return absl::Now() + impl_->options.client.default_timeout;
}

void Pool::Submit(std::vector<std::unique_ptr<OpCall>> calls) {
  for (auto& call : calls) call->wait_for_ready = false;  // the pool waits for ready workers
  impl_->Submit(std::move(calls));
}

absl::Status Pool::RegisterLayer(const LayerSpec& layer, const CallOptions& options) {
  return RegisterLayer(layer, impl_->options.placement, options);
}

void Pool::RegisterLayerAsync(const LayerSpec& layer, StatusCallback callback,
                              const CallOptions& options) {
  RegisterLayerAsync(layer, impl_->options.placement, std::move(callback), options);
}

absl::Status Pool::RegisterLayer(const LayerSpec& layer, const Placement& placement,
                                 const CallOptions& options) {
  absl::Status result;
  absl::Notification done;
  RegisterLayerAsync(
      layer, placement,
      [&](absl::Status s) {
        result = std::move(s);
        done.Notify();
      },
      options);
  done.WaitForNotification();
  return result;
}

void Pool::RegisterLayerAsync(const LayerSpec& layer, const Placement& placement,
                              StatusCallback callback, const CallOptions& options) {
  impl_->RegisterLayerAsync(layer, placement, DeadlineOf(options), std::move(callback));
}

absl::Status Pool::RemoveLayer(absl::string_view layer_id, const CallOptions& options) {
  absl::Status result;
  absl::Notification done;
  RemoveLayerAsync(
      layer_id,
      [&](absl::Status s) {
        result = std::move(s);
        done.Notify();
      },
      options);
  done.WaitForNotification();
  return result;
}

void Pool::RemoveLayerAsync(absl::string_view layer_id, StatusCallback callback,
                            const CallOptions& options) {
  const std::string id(layer_id);
  std::vector<std::shared_ptr<ClientCore>> forget, remove;
  bool known = false;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->layers.find(id);
    if (it != impl_->layers.end()) {
      known = true;
      for (const auto& [a, w] : impl_->workers) {
        forget.push_back(w->core);
        if (Impl::Usable(*w) && w->core->LayerConfirmed(id)) remove.push_back(w->core);
      }
      impl_->layers.erase(it);
    }
  }
  if (!known) {
    callback(absl::NotFoundError(absl::StrCat("layer ", id, " is not registered in the pool")));
    return;
  }
  for (const auto& core : forget) core->ForgetLayer(id);
  if (remove.empty()) {
    callback(absl::OkStatus());
    return;
  }
  // Completes when every worker answered; NOT_FOUND (already gone) is fine.
  struct Join {
    absl::Mutex mu;
    int left ABSL_GUARDED_BY(mu) = 0;
    absl::Status first ABSL_GUARDED_BY(mu);
    StatusCallback callback;
  };
  auto join = std::make_shared<Join>();
  join->left = static_cast<int>(remove.size());
  join->callback = std::move(callback);
  const absl::Time deadline = DeadlineOf(options);
  for (const auto& core : remove) {
    core->RemoveLayerAsync(id, deadline, [join](absl::Status s) {
      absl::Status result;
      {
        absl::MutexLock lock(&join->mu);
        if (!s.ok() && s.code() != absl::StatusCode::kNotFound && join->first.ok()) {
          join->first = s;
        }
        if (--join->left > 0) return;
        result = join->first;
      }
      join->callback(result);
    });
  }
}

absl::StatusOr<WorkerStatistics> Pool::GetWorkerStatistics(absl::string_view address,
                                                           const CallOptions& options) {
  absl::StatusOr<WorkerStatistics> result = absl::UnknownError("not run");
  absl::Notification done;
  GetWorkerStatisticsAsync(
      address,
      [&](absl::StatusOr<WorkerStatistics> s) {
        result = std::move(s);
        done.Notify();
      },
      options);
  done.WaitForNotification();
  return result;
}

void Pool::GetWorkerStatisticsAsync(absl::string_view address, Callback<WorkerStatistics> callback,
                                    const CallOptions& options) {
  std::shared_ptr<ClientCore> core;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->workers.find(std::string(address));
    if (it != impl_->workers.end()) core = it->second->core;
  }
  if (core == nullptr) {
    callback(absl::NotFoundError(absl::StrCat("no worker ", address, " in the pool")));
    return;
  }
  core->GetStatisticsAsync(DeadlineOf(options), std::move(callback));
}

}  // namespace atp::client
