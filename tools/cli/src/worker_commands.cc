#include "worker_commands.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "cli.h"

namespace atp::cli {
namespace {

std::string OneLine(absl::string_view message) {
  return absl::StrReplaceAll(message, {{"\r\n", " "}, {"\n", " "}, {"\r", " "}});
}

int Fail(std::ostream& err, const absl::Status& status, const std::string& command) {
  if (IsUsageError(status)) {
    err << OneLine(status.message()) << " (see '" << command << " --help')" << std::endl;
    return kExitUsageError;
  }
  err << "atp: error: " << OneLine(status.message()) << std::endl;
  return kExitRuntimeError;
}

void DeclareInfo(ArgParser& p) {
  p.AddUsage("--target HOST:PORT [--tls-ca FILE] [--token-file FILE]");
  AddRemoteOptions(p, false);
  p.AddNotes(
      "Prints one key=value per line: the worker's version, backend, device, operations, whether "
      "it requires a token, its readiness, and every limit it enforces (max_tensor_bytes, "
      "max_sequence_length, max_rank, chunk_bytes, max_inflight_requests, "
      "max_inflight_per_stream, max_resident_layer_bytes, max_queue_depth, max_inflight_bytes).");
}

void DeclareHealth(ArgParser& p) {
  p.AddUsage("--target HOST:PORT [--service NAME] [--wait SECONDS] [--tls-ca FILE]");
  AddRemoteOptions(p, false);
  p.AddOption("service", "NAME",
              "grpc.health.v1 service to ask about: atp.v1.Worker (default: readiness) or \"\" "
              "(liveness)");
  p.AddOption("wait", "SECONDS",
              "keep asking until the worker is SERVING or SECONDS pass (default 0: ask once)");
  p.AddNotes(
      "Prints SERVING, NOT_SERVING or UNKNOWN and exits 0 only for SERVING (1 otherwise, and for a "
      "worker that cannot be reached).");
}

absl::Status RunInfo(const ArgParser& p, std::ostream& out) {
  absl::StatusOr<RemoteOptions> remote = ParseRemoteOptions(p);
  if (!remote.ok()) return remote.status();
  if (remote->target.empty()) return p.GetRequired("target").status();
  absl::StatusOr<std::unique_ptr<client::Client>> c = ConnectToWorker(*remote);
  if (!c.ok()) return c.status();
  absl::StatusOr<client::ServerInfo> info = (*c)->GetServerInfo();
  if (!info.ok()) return DescribeRemoteError(info.status(), remote->target);
  absl::StatusOr<client::Readiness> ready = (*c)->CheckHealth();
  const client::WorkerLimits& l = info->limits;
  out << "target=" << remote->target << "\n"
      << "version=" << info->version << "\n"
      << "backend=" << info->backend << "\n"
      << "device=" << info->device << "\n"
      << "operations=" << absl::StrJoin(info->operations, ",") << "\n"
      << "requires_token=" << (info->requires_token ? "true" : "false") << "\n"
      << "readiness=" << (ready.ok() ? client::ReadinessName(*ready) : "UNKNOWN") << "\n"
      << "max_tensor_bytes=" << l.max_tensor_bytes << "\n"
      << "max_sequence_length=" << l.max_sequence_length << "\n"
      << "max_rank=" << l.max_rank << "\n"
      << "chunk_bytes=" << l.chunk_bytes << "\n"
      << "max_inflight_requests=" << l.max_inflight_requests << "\n"
      << "max_inflight_per_stream=" << l.max_inflight_per_stream << "\n"
      << "max_resident_layer_bytes=" << l.max_resident_layer_bytes << "\n"
      << "max_queue_depth=" << l.max_queue_depth << "\n"
      << "max_inflight_bytes=" << l.max_inflight_bytes << "\n";
  return absl::OkStatus();
}

// OK only when SERVING; `*readiness` is what was printed.
absl::Status RunHealth(const ArgParser& p, std::ostream& out) {
  absl::StatusOr<RemoteOptions> remote = ParseRemoteOptions(p);
  if (!remote.ok()) return remote.status();
  if (remote->target.empty()) return p.GetRequired("target").status();
  const std::string service = p.Get("service").value_or("atp.v1.Worker");
  absl::StatusOr<double> wait = p.GetDouble("wait", 0, 0, 86400, /*low_inclusive=*/true);
  if (!wait.ok()) return wait.status();
  absl::StatusOr<std::unique_ptr<client::Client>> c = ConnectToWorker(*remote);
  if (!c.ok()) return c.status();
  const absl::Time until = absl::Now() + absl::Seconds(*wait);
  absl::StatusOr<client::Readiness> ready;
  for (;;) {  // bounded by `until`
    client::CallOptions call;
    // Waiting: block (up to the end) for the worker to become reachable instead of failing fast.
    call.wait_for_ready = *wait > 0;
    call.deadline = std::max(until, absl::Now() + std::min(remote->timeout, absl::Seconds(10)));
    ready = (*c)->CheckHealth(service, call);
    if (ready.ok() && *ready == client::Readiness::kServing) break;
    if (absl::Now() >= until) break;
    absl::SleepFor(std::min(absl::Milliseconds(100), until - absl::Now()));
  }
  if (!ready.ok()) return DescribeRemoteError(ready.status(), remote->target);
  out << client::ReadinessName(*ready) << "\n";
  if (*ready != client::Readiness::kServing) {
    return absl::UnavailableError(absl::StrCat("worker ", remote->target, " is not ready (",
                                               client::ReadinessName(*ready), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

void AddRemoteOptions(ArgParser& p, bool for_run) {
  p.AddSection(for_run ? "Remote (run on an atp worker instead of in-process):" : "Worker:");
  p.AddOption("target", "HOST:PORT",
              for_run ? "an atp-worker's address; the op runs there through the client library"
                      : "the atp-worker's address (required)");
  p.AddOption("tls-ca", "FILE", "PEM CA certificate: connect with TLS and verify the worker");
  p.AddOption("tls-server-name", "NAME",
              "verify the worker's certificate against NAME instead of the target's host");
  p.AddOption("token-file", "FILE", "file holding the bearer token the worker requires");
  p.AddOption("timeout", "SECONDS", "deadline of each call to the worker (default 600)");
}

absl::StatusOr<RemoteOptions> ParseRemoteOptions(const ArgParser& p) {
  RemoteOptions o;
  o.target = p.Get("target").value_or("");
  o.tls_ca = p.Get("tls-ca").value_or("");
  o.tls_server_name = p.Get("tls-server-name").value_or("");
  if (!o.tls_server_name.empty() && o.tls_ca.empty()) {
    return p.Error("--tls-server-name needs --tls-ca");
  }
  o.token_file = p.Get("token-file").value_or("");
  absl::StatusOr<double> timeout = p.GetDouble("timeout", 600, 0, 86400 * 7, false);
  if (!timeout.ok()) return timeout.status();
  o.timeout = absl::Seconds(*timeout);
  if (o.target.empty() &&
      (p.Has("tls-ca") || p.Has("tls-server-name") || p.Has("token-file") || p.Has("timeout"))) {
    return p.Error("--tls-ca, --tls-server-name, --token-file and --timeout need --target");
  }
  if (p.Has("target") && o.target.empty()) return p.Error("--target is empty, want HOST:PORT");
  return o;
}

bool IsWorkerCommand(absl::string_view name) { return name == "info" || name == "health"; }

int RunWorkerCommand(absl::string_view name, absl::Span<const std::string> args, std::ostream& out,
                     std::ostream& err) {
  const bool info = name == "info";
  ArgParser parser(absl::StrCat("atp ", name),
                   info ? "print an atp worker's server info and limits"
                        : "exit 0 only when an atp worker is ready (SERVING)");
  if (info) {
    DeclareInfo(parser);
  } else {
    DeclareHealth(parser);
  }
  absl::Status status = parser.Parse(args);
  if (status.ok() && parser.help_requested()) {
    out << parser.Help();
    return kExitOk;
  }
  if (status.ok()) status = info ? RunInfo(parser, out) : RunHealth(parser, out);
  if (!status.ok()) return Fail(err, status, parser.command());
  return kExitOk;
}

}  // namespace atp::cli
