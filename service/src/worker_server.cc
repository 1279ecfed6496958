#include "atp/service/worker_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/server_builder_option.h>
#include <malloc.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "call_tracker.h"
#include "executor.h"
#include "health_service.h"
#include "layer_registry.h"
#include "log.h"
#include "metrics_http.h"
#include "stats.h"
#include "token_check.h"
#include "worker_core.h"
#include "worker_service.h"

#ifndef ATP_VERSION
#define ATP_VERSION "0.0.0"
#endif

namespace atp::service {
namespace {

constexpr char kReadinessService[] = "atp.v1.Worker";
// The monitor thread sweeps streams for requests whose timeout passed while their input stalled,
// and polls the backend's health every kHealthPollEvery sweeps.
constexpr absl::Duration kSweepInterval = absl::Milliseconds(100);
constexpr int kHealthPollEvery = 10;

// Turns server reflection on or off for one builder. Linking grpc++_reflection registers its
// plugin for every builder of the process; the health-only listener must not serve it.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool enable) : enable_(enable) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    auto is_reflection = [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
      return p->name() == grpc::reflection::ProtoServerReflectionPlugin().name();
    };
    const bool present = std::any_of(plugins->begin(), plugins->end(), is_reflection);
    if (enable_ && !present) {
      plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
    } else if (!enable_) {
      plugins->erase(std::remove_if(plugins->begin(), plugins->end(), is_reflection),
                     plugins->end());
    }
  }

 private:
  const bool enable_;
};

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", flag, " file ", path, ": ", std::strerror(errno)));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string OpenSslError() {
  const unsigned long err = ERR_get_error();
  char text[256];
  ERR_error_string_n(err, text, sizeof(text));
  ERR_clear_error();
  return text;
}

// Checks that `cert_pem` holds a certificate and `key_pem` its private key, so that a mistake is
// reported by name instead of as a server that does not start.
absl::Status CheckKeyPair(const std::string& cert_pem, const std::string& key_pem,
                          const WorkerOptions& o) {
  BIO* cert_bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", o.tls_cert, " holds no PEM certificate: ", OpenSslError()));
  }
  BIO* key_bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  absl::Status status;
  if (key == nullptr) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", o.tls_key, " holds no PEM private key: ", OpenSslError()));
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", o.tls_key, " is not the key of --tls-cert ", o.tls_cert));
    ERR_clear_error();
  }
  EVP_PKEY_free(key);
  X509_free(cert);
  return status;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const WorkerOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) {
    if (!o.tls_client_ca.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert.empty() || o.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  auto cert = ReadFile(o.tls_cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadFile(o.tls_key, "--tls-key");
  if (!key.ok()) return key.status();
  if (absl::Status s = CheckKeyPair(*cert, *key, o); !s.ok()) return s;
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!o.tls_client_ca.empty()) {
    auto ca = ReadFile(o.tls_client_ca, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    BIO* bio = BIO_new_mem_buf(ca->data(), static_cast<int>(ca->size()));
    X509* ca_cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (ca_cert == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-client-ca ", o.tls_client_ca, " holds no PEM certificate: ", OpenSslError()));
    }
    X509_free(ca_cert);
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    ssl.pem_root_certs = *ca;
  }
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(const WorkerOptions& o) {
  kernels::CpuBackendOptions cpu;
  cpu.threads = o.threads;
  if (o.backend == "cpu") return kernels::CreateCpuBackend(cpu);
  if (o.backend == "cuda") return kernels::CreateCudaBackend(o.device);
  if (o.backend == "auto") {
    auto cuda = kernels::CreateCudaBackend(o.device);
    if (cuda.ok()) return cuda;
    Log(LogLevel::kInfo, "no usable CUDA backend; using the CPU backend",
        {{"reason", std::string(cuda.status().message())}});
    return kernels::CreateCpuBackend(cpu);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--backend is \"", o.backend, "\", want auto, cpu or cuda"));
}

uint64_t DefaultResidentLimit(const kernels::Backend& backend) {
  uint64_t total = backend.memory().total_bytes;
  if (total == 0) {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) total = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
  }
  return total / 5 * 4;
}

}  // namespace

const char* WorkerVersion() { return ATP_VERSION; }

void TuneMallocForLargePayloads() {
  // Payloads and the backend's tensors are megabytes to gigabytes. By default glibc serves such
  // blocks with fresh mmaps (or trims freed heap tops), so every request faults in and zeroes its
  // pages again; keeping them in the heap lets freed memory be reused. 32 MiB is the largest
  // threshold glibc accepts; larger blocks are pooled by PayloadPool where the worker owns them.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

struct WorkerServer::Impl {
  WorkerOptions options;
  std::unique_ptr<Stats> stats;
  std::unique_ptr<Executor> executor;  // owns the backend
  std::unique_ptr<LayerRegistry> registry;
  std::optional<TokenCheck> token;
  std::unique_ptr<WorkerCore> core;
  CallTracker tracker;
  HealthState health;
  std::unique_ptr<WorkerService> service;
  std::unique_ptr<HealthService> health_service;
  std::unique_ptr<HealthService> probe_health_service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::Server> probe_server;
  std::unique_ptr<MetricsHttpServer> metrics;
  int port = 0;
  int probe_port = 0;

  std::thread monitor;
  absl::Notification monitor_stop;

  absl::Mutex shutdown_mu;
  bool shutting_down ABSL_GUARDED_BY(shutdown_mu) = false;
  absl::Notification stopped;

  void UpdateReadiness() {
    const absl::Status health_status = executor->backend().health();
    const bool healthy = health_status.ok();
    if (core->backend_healthy.exchange(healthy) != healthy) {
      Log(healthy ? LogLevel::kInfo : LogLevel::kError,
          healthy ? "backend healthy again" : "backend unhealthy",
          {{"reason", std::string(health_status.message())}});
    }
    const bool ready = healthy && !core->draining.load();
    health.Set(kReadinessService, ready);
    stats->SetReady(ready);
  }

  void Monitor() {
    for (int tick = 1; !monitor_stop.WaitForNotificationWithTimeout(kSweepInterval); ++tick) {
      tracker.SweepAll(absl::Now());
      if (tick % kHealthPollEvery == 0) UpdateReadiness();
    }
  }
};

WorkerServer::WorkerServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(const WorkerOptions& options) {
  ConfigureLogging(options.log_format, options.log_level);
  auto backend = MakeBackend(options);
  if (!backend.ok()) return backend.status();
  return Start(options, *std::move(backend));
}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(
    const WorkerOptions& options, std::unique_ptr<kernels::Backend> backend) {
  ConfigureLogging(options.log_format, options.log_level);
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const WorkerOptions& o = impl->options;

  if (!o.token_file.empty()) {
    auto token = TokenCheck::FromFile(o.token_file);
    if (!token.ok()) return token.status();
    impl->token.emplace(*std::move(token));
  }
  auto credentials = MakeCredentials(o);
  if (!credentials.ok()) return credentials.status();

  WorkerLimits limits;
  limits.max_tensor_bytes = o.max_tensor_bytes;
  limits.max_sequence_length = o.max_sequence_length;
  limits.max_rank = o.max_rank;
  limits.chunk_bytes = o.chunk_bytes;
  limits.max_inflight_requests = o.max_inflight_requests;
  limits.max_inflight_per_stream = o.max_inflight_per_stream;
  limits.max_resident_layer_bytes =
      o.max_resident_layer_bytes > 0 ? o.max_resident_layer_bytes : DefaultResidentLimit(*backend);
  limits.max_queue_depth = o.max_queue_depth;
  limits.max_inflight_bytes = o.max_inflight_bytes;

  ServerDescription description;
  description.version = ATP_VERSION;
  description.backend = backend->name();
  description.device = backend->device_description();
  description.requires_token = impl->token.has_value();

  impl->stats = std::make_unique<Stats>();
  impl->stats->SetInfo(description.version, description.backend, description.device);
  impl->executor = std::make_unique<Executor>(std::move(backend), o.max_queue_depth);
  Stats* stats = impl->stats.get();
  impl->executor->set_depth_observer([stats](int depth) { stats->SetQueueDepth(depth); });
  impl->registry = std::make_unique<LayerRegistry>(limits.max_resident_layer_bytes);
  impl->registry->set_observer(
      [stats](size_t layers, uint64_t bytes) { stats->SetResident(layers, bytes); });
  impl->core = std::make_unique<WorkerCore>(
      limits, o.max_queue_depth, o.max_inflight_bytes, description, impl->executor.get(),
      impl->registry.get(), impl->stats.get(), impl->token ? &*impl->token : nullptr);

  impl->health.Set("", true);
  impl->UpdateReadiness();

  impl->service = std::make_unique<WorkerService>(impl->core.get(), &impl->tracker);
  impl->health_service = std::make_unique<HealthService>(&impl->health);
  {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(o.listen, *credentials, &impl->port);
    builder.RegisterService(impl->service.get());
    builder.RegisterService(impl->health_service.get());
    builder.SetOption(std::make_unique<ReflectionOption>(true));
    // Chunks up to chunk_bytes plus room for their framing and for headers.
    builder.SetMaxReceiveMessageSize(static_cast<int>(o.chunk_bytes) + 64 * 1024);
    impl->server = builder.BuildAndStart();
    if (impl->server == nullptr || impl->port == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve gRPC on --listen ", o.listen,
                       " (address in use or not local, or unusable TLS files)"));
    }
  }
  if (!o.health_listen.empty()) {
    impl->probe_health_service = std::make_unique<HealthService>(&impl->health);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(o.health_listen, grpc::InsecureServerCredentials(), &impl->probe_port);
    builder.RegisterService(impl->probe_health_service.get());
    builder.SetOption(std::make_unique<ReflectionOption>(false));
    impl->probe_server = builder.BuildAndStart();
    if (impl->probe_server == nullptr || impl->probe_port == 0) {
      impl->server->Shutdown(std::chrono::system_clock::now());
      return absl::UnavailableError(
          absl::StrCat("cannot serve the health listener on --health-listen ", o.health_listen));
    }
  }
  if (!o.metrics_listen.empty()) {
    auto metrics =
        MetricsHttpServer::Start(o.metrics_listen, [stats] { return stats->PrometheusText(); });
    if (!metrics.ok()) {
      if (impl->probe_server) impl->probe_server->Shutdown(std::chrono::system_clock::now());
      impl->server->Shutdown(std::chrono::system_clock::now());
      return metrics.status();
    }
    impl->metrics = *std::move(metrics);
  }
  Impl* raw = impl.get();
  impl->monitor = std::thread([raw] { raw->Monitor(); });

  Log(LogLevel::kInfo, "worker started",
      {{"version", description.version},
       {"listen", o.listen},
       {"port", impl->port},
       {"health_port", impl->probe_port},
       {"metrics_port", impl->metrics ? impl->metrics->port() : 0},
       {"backend", description.backend},
       {"device", description.device},
       {"tls", !o.tls_cert.empty()},
       {"mtls", !o.tls_client_ca.empty()},
       {"token", impl->token.has_value()},
       {"max_resident_layer_bytes", limits.max_resident_layer_bytes}});
  return std::unique_ptr<WorkerServer>(new WorkerServer(std::move(impl)));
}

WorkerServer::~WorkerServer() { Shutdown(absl::ZeroDuration()); }

int WorkerServer::port() const { return impl_->port; }
int WorkerServer::health_port() const { return impl_->probe_port; }
int WorkerServer::metrics_port() const { return impl_->metrics ? impl_->metrics->port() : 0; }

void WorkerServer::Shutdown() { Shutdown(impl_->options.drain_timeout); }

void WorkerServer::Shutdown(absl::Duration drain_timeout) {
  Impl& s = *impl_;
  bool first;
  {
    absl::MutexLock lock(&s.shutdown_mu);
    first = !s.shutting_down;
    s.shutting_down = true;
  }
  if (!first) {
    s.stopped.WaitForNotification();  // another caller drains
    return;
  }
  const absl::Time start = absl::Now();
  Log(LogLevel::kInfo, "draining",
      {{"drain_timeout_s", absl::ToDoubleSeconds(drain_timeout)},
       {"open_streams", s.tracker.size()}});
  // Readiness first, so that probes and pool clients move traffic elsewhere.
  s.core->draining.store(true);
  s.health.Set(kReadinessService, false);
  s.stats->SetReady(false);
  s.tracker.DrainAll();
  const bool idle = s.tracker.WaitIdle(start + drain_timeout);
  if (!idle) {
    Log(LogLevel::kWarning, "drain timeout; cancelling the remaining work",
        {{"open_streams", s.tracker.size()}});
    s.core->stopping.store(true);
    s.tracker.StopAll();
  }
  s.monitor_stop.Notify();
  if (s.monitor.joinable()) s.monitor.join();
  // Health watches send their last status (NOT_SERVING) and end; a second bounds the wait for
  // clients that do not read it.
  s.health.Shutdown();
  s.health.WaitForWatchesToEnd(absl::Now() + absl::Seconds(1));
  // Compute streams were drained (or stopped); whatever is left is cancelled now.
  const auto now = std::chrono::system_clock::now();
  if (s.probe_server) s.probe_server->Shutdown(now);
  s.server->Shutdown(now);
  s.executor->Shutdown();
  s.registry->Clear();
  s.metrics.reset();
  Log(LogLevel::kInfo, "worker stopped",
      {{"drained", idle}, {"shutdown_s", absl::ToDoubleSeconds(absl::Now() - start)}});
  s.stopped.Notify();
}

void WorkerServer::Wait() { impl_->stopped.WaitForNotification(); }

}  // namespace atp::service
