#include "atp/service/worker_flags.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace atp::service {
namespace {

constexpr int kMaxFlagfileDepth = 8;

struct FlagDef {
  const char* name;
  const char* value;  // how the value is written in --help
  const char* help;
  std::function<std::string(const WorkerOptions&)> show_default;
  std::function<absl::Status(absl::string_view, WorkerOptions*)> set;
};

absl::Status Bad(absl::string_view flag, absl::string_view value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "=", value, " is not valid, want ", want));
}

template <typename T>
std::function<absl::Status(absl::string_view, WorkerOptions*)> SetInt(const char* flag,
                                                                      T WorkerOptions::*field,
                                                                      int64_t lo, int64_t hi) {
  return [=](absl::string_view v, WorkerOptions* o) {
    int64_t n;
    if (!absl::SimpleAtoi(v, &n) || n < lo || n > hi) {
      return Bad(flag, v, absl::StrCat("an integer from ", lo, " to ", hi));
    }
    o->*field = static_cast<T>(n);
    return absl::OkStatus();
  };
}

template <typename T>
std::function<absl::Status(absl::string_view, WorkerOptions*)> SetBytes(const char* flag,
                                                                        T WorkerOptions::*field,
                                                                        uint64_t lo, uint64_t hi) {
  return [=](absl::string_view v, WorkerOptions* o) {
    auto n = ParseByteSize(v);
    if (!n.ok() || *n < lo || *n > hi) {
      return Bad(flag, v,
                 absl::StrCat("a byte size from ", lo, " to ", hi,
                              " (a number, optionally with KiB, MiB, GiB, KB, MB, GB)"));
    }
    o->*field = static_cast<T>(*n);
    return absl::OkStatus();
  };
}

std::function<absl::Status(absl::string_view, WorkerOptions*)> SetString(
    std::string WorkerOptions::*field) {
  return [=](absl::string_view v, WorkerOptions* o) {
    o->*field = std::string(v);
    return absl::OkStatus();
  };
}

std::string Quoted(const std::string& s) { return s.empty() ? "\"\"" : s; }

std::string BytesText(uint64_t n) {
  if (n == 0) return "0";
  for (const auto& [unit, size] : {std::pair<const char*, uint64_t>{"GiB", uint64_t{1} << 30},
                                   {"MiB", uint64_t{1} << 20},
                                   {"KiB", uint64_t{1} << 10}}) {
    if (n % size == 0) return absl::StrCat(n / size, unit);
  }
  return absl::StrCat(n);
}

const std::vector<FlagDef>& Flags() {
  static const auto* flags = new std::vector<FlagDef>{
      {"listen", "HOST:PORT",
       "Address of the gRPC API (atp.v1.Worker, grpc.health.v1, server reflection). Port 0 "
       "picks a free port; the \"worker started\" log line names it.",
       [](const WorkerOptions& o) { return o.listen; }, SetString(&WorkerOptions::listen)},
      {"health-listen", "HOST:PORT",
       "Extra plaintext listener that serves only grpc.health.v1, for Kubernetes' native gRPC "
       "probes (which cannot speak TLS). Empty: none.",
       [](const WorkerOptions& o) { return Quoted(o.health_listen); },
       SetString(&WorkerOptions::health_listen)},
      {"metrics-listen", "HOST:PORT",
       "Address of the Prometheus endpoint (HTTP GET /metrics). Empty: none.",
       [](const WorkerOptions& o) { return Quoted(o.metrics_listen); },
       SetString(&WorkerOptions::metrics_listen)},
      {"backend", "auto|cpu|cuda",
       "Compute backend. auto: CUDA when a usable device exists, else the CPU.",
       [](const WorkerOptions& o) { return o.backend; },
       [](absl::string_view v, WorkerOptions* o) {
         if (v != "auto" && v != "cpu" && v != "cuda")
           return Bad("backend", v, "auto, cpu or cuda");
         o->backend = std::string(v);
         return absl::OkStatus();
       }},
      {"device", "N", "CUDA device index.",
       [](const WorkerOptions& o) { return absl::StrCat(o.device); },
       SetInt("device", &WorkerOptions::device, 0, 1024)},
      {"threads", "N", "Threads of the CPU backend; 0 = all cores.",
       [](const WorkerOptions& o) { return absl::StrCat(o.threads); },
       SetInt("threads", &WorkerOptions::threads, 0, 4096)},
      {"max-tensor-bytes", "BYTES",
       "Largest payload of one tensor; a larger header is refused (RESOURCE_EXHAUSTED) before "
       "its payload is read.",
       [](const WorkerOptions& o) { return BytesText(o.max_tensor_bytes); },
       SetBytes("max-tensor-bytes", &WorkerOptions::max_tensor_bytes, 1,
                std::numeric_limits<int64_t>::max())},
      {"max-sequence-length", "N", "Largest sequence length L of a compute input.",
       [](const WorkerOptions& o) { return absl::StrCat(o.max_sequence_length); },
       SetInt("max-sequence-length", &WorkerOptions::max_sequence_length, 1,
              std::numeric_limits<int32_t>::max())},
      {"max-rank", "N",
       "Largest rank r: rank policies are clipped to it and larger factored inputs refused.",
       [](const WorkerOptions& o) { return absl::StrCat(o.max_rank); },
       SetInt("max-rank", &WorkerOptions::max_rank, 1, std::numeric_limits<int32_t>::max())},
      {"max-inflight-requests", "N",
       "Requests admitted and not yet answered, over all streams; more are RESOURCE_EXHAUSTED.",
       [](const WorkerOptions& o) { return absl::StrCat(o.max_inflight_requests); },
       SetInt("max-inflight-requests", &WorkerOptions::max_inflight_requests, 1, 1 << 20)},
      {"max-inflight-per-stream", "N", "Requests in flight on one Compute stream.",
       [](const WorkerOptions& o) { return absl::StrCat(o.max_inflight_per_stream); },
       SetInt("max-inflight-per-stream", &WorkerOptions::max_inflight_per_stream, 1, 1 << 16)},
      {"max-queue-depth", "N",
       "Requests waiting for the executor (input complete, compute not started); a full queue "
       "is RESOURCE_EXHAUSTED.",
       [](const WorkerOptions& o) { return absl::StrCat(o.max_queue_depth); },
       SetInt("max-queue-depth", &WorkerOptions::max_queue_depth, 1, 1 << 20)},
      {"max-inflight-bytes", "BYTES",
       "Memory for payloads in flight: each request reserves its inputs plus an upper bound of "
       "its outputs at admission.",
       [](const WorkerOptions& o) { return BytesText(o.max_inflight_bytes); },
       SetBytes("max-inflight-bytes", &WorkerOptions::max_inflight_bytes, 1,
                std::numeric_limits<int64_t>::max())},
      {"max-resident-layer-bytes", "BYTES",
       "Memory for registered layer weights; 0 = 80% of the backend's memory.",
       [](const WorkerOptions& o) { return BytesText(o.max_resident_layer_bytes); },
       SetBytes("max-resident-layer-bytes", &WorkerOptions::max_resident_layer_bytes, 0,
                std::numeric_limits<int64_t>::max())},
      {"chunk-bytes", "BYTES",
       "Largest chunk the worker accepts and the size of the chunks it sends (advertised in "
       "ServerInfo.limits).",
       [](const WorkerOptions& o) { return BytesText(o.chunk_bytes); },
       SetBytes("chunk-bytes", &WorkerOptions::chunk_bytes, 1024, uint64_t{64} << 20)},
      {"tls-cert", "FILE", "PEM certificate (chain) of the server; with --tls-key turns TLS on.",
       [](const WorkerOptions& o) { return Quoted(o.tls_cert); },
       SetString(&WorkerOptions::tls_cert)},
      {"tls-key", "FILE", "PEM private key of --tls-cert.",
       [](const WorkerOptions& o) { return Quoted(o.tls_key); },
       SetString(&WorkerOptions::tls_key)},
      {"tls-client-ca", "FILE",
       "PEM CA certificate(s); when set, clients must present a certificate signed by it "
       "(mutual TLS).",
       [](const WorkerOptions& o) { return Quoted(o.tls_client_ca); },
       SetString(&WorkerOptions::tls_client_ca)},
      {"token-file", "FILE",
       "File holding a bearer token; every atp.v1.Worker call must then carry "
       "\"authorization: Bearer <token>\" metadata (health and reflection stay open).",
       [](const WorkerOptions& o) { return Quoted(o.token_file); },
       SetString(&WorkerOptions::token_file)},
      {"drain-timeout", "DURATION",
       "On SIGTERM: readiness NOT_SERVING, finish in-flight work for at most this long, then "
       "cancel the rest and exit 0.",
       [](const WorkerOptions& o) { return absl::FormatDuration(o.drain_timeout); },
       [](absl::string_view v, WorkerOptions* o) {
         absl::Duration d;
         double seconds;
         if (absl::SimpleAtod(v, &seconds) && seconds >= 0) {
           d = absl::Seconds(seconds);
         } else if (!absl::ParseDuration(v, &d) || d < absl::ZeroDuration()) {
           return Bad("drain-timeout", v, "a duration such as 30s, 500ms or 2m");
         }
         o->drain_timeout = d;
         return absl::OkStatus();
       }},
      {"log-format", "text|json",
       "Log lines as key=value text (logfmt) or as one JSON object per line, on stderr.",
       [](const WorkerOptions& o) { return o.log_format == LogFormat::kJson ? "json" : "text"; },
       [](absl::string_view v, WorkerOptions* o) {
         if (v == "text") {
           o->log_format = LogFormat::kText;
         } else if (v == "json") {
           o->log_format = LogFormat::kJson;
         } else {
           return Bad("log-format", v, "text or json");
         }
         return absl::OkStatus();
       }},
      {"log-level", "debug|info|warning|error", "Lowest level logged (debug logs refusals).",
       [](const WorkerOptions& o) {
         switch (o.log_level) {
           case LogLevel::kDebug:
             return "debug";
           case LogLevel::kWarning:
             return "warning";
           case LogLevel::kError:
             return "error";
           default:
             return "info";
         }
       },
       [](absl::string_view v, WorkerOptions* o) {
         if (v == "debug") {
           o->log_level = LogLevel::kDebug;
         } else if (v == "info") {
           o->log_level = LogLevel::kInfo;
         } else if (v == "warning") {
           o->log_level = LogLevel::kWarning;
         } else if (v == "error") {
           o->log_level = LogLevel::kError;
         } else {
           return Bad("log-level", v, "debug, info, warning or error");
         }
         return absl::OkStatus();
       }},
  };
  return *flags;
}

const FlagDef* FindFlag(absl::string_view name) {
  for (const FlagDef& f : Flags()) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

absl::Status ParseArgs(const std::vector<std::string>& args, int depth, WorkerFlags* out);

absl::Status ReadFlagfile(absl::string_view path, int depth, WorkerFlags* out) {
  if (depth >= kMaxFlagfileDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("--flagfile=", path, " nests more than ", kMaxFlagfileDepth, " flag files"));
  }
  std::ifstream in{std::string(path)};
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--flagfile=", path, " cannot be read: ", std::strerror(errno)));
  }
  std::vector<std::string> args;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#') continue;
    if (!absl::StartsWith(text, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--flagfile=", path, " line ", number, ": \"", text, "\" is not a --flag"));
    }
    args.emplace_back(text);
  }
  return ParseArgs(args, depth + 1, out);
}

absl::Status ParseArgs(const std::vector<std::string>& args, int depth, WorkerFlags* out) {
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument \"", arg, "\"; atp-worker takes only --flags (see --help)"));
    }
    arg.remove_prefix(2);
    std::string name;
    std::optional<std::string> value;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    } else {
      name = std::string(arg);
    }
    if (name == "help" || name == "helpfull" || name == "h") {
      out->help = true;
      continue;
    }
    if (name == "version") {
      out->version = true;
      continue;
    }
    auto next_value = [&]() -> absl::StatusOr<std::string> {
      if (value.has_value()) return *value;
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      return args[++i];
    };
    if (name == "flagfile") {
      auto path = next_value();
      if (!path.ok()) return path.status();
      if (absl::Status s = ReadFlagfile(*path, depth, out); !s.ok()) return s;
      continue;
    }
    const FlagDef* flag = FindFlag(name);
    if (flag == nullptr) {
      // Accept --max_tensor_bytes for --max-tensor-bytes, as absl/gflags users may type it.
      std::string dashed = name;
      std::replace(dashed.begin(), dashed.end(), '_', '-');
      flag = FindFlag(dashed);
      if (flag == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
      }
    }
    auto v = next_value();
    if (!v.ok()) return v.status();
    if (absl::Status s = flag->set(*v, &out->options); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  uint64_t n;
  if (digits == 0 || !absl::SimpleAtoi(text.substr(0, digits), &n)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a byte size"));
  }
  const std::string unit = absl::AsciiStrToLower(text.substr(digits));
  uint64_t scale = 1;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "k" || unit == "kib") {
    scale = uint64_t{1} << 10;
  } else if (unit == "m" || unit == "mib") {
    scale = uint64_t{1} << 20;
  } else if (unit == "g" || unit == "gib") {
    scale = uint64_t{1} << 30;
  } else if (unit == "t" || unit == "tib") {
    scale = uint64_t{1} << 40;
  } else if (unit == "kb") {
    scale = 1000;
  } else if (unit == "mb") {
    scale = 1000 * 1000;
  } else if (unit == "gb") {
    scale = 1000 * 1000 * 1000;
  } else if (unit == "tb") {
    scale = uint64_t{1000} * 1000 * 1000 * 1000;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has an unknown unit"));
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(n, scale, &bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" overflows 64 bits"));
  }
  return bytes;
}

absl::StatusOr<WorkerFlags> ParseWorkerFlags(int argc, const char* const* argv) {
  WorkerFlags flags;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  if (absl::Status s = ParseArgs(args, 0, &flags); !s.ok()) return s;
  return flags;
}

std::string WorkerUsage(absl::string_view program) {
  const WorkerOptions defaults;
  std::string out = absl::StrCat(
      "Usage: ", program, " [--flag=value ...]\n\n",
      "atp-worker serves ATP attention, exact attention, low-rank linear layers and principal\n"
      "bases over gRPC (atp.v1.Worker), with grpc.health.v1 (\"\" = liveness, \"atp.v1.Worker\" =\n"
      "readiness), server reflection and Prometheus metrics. SIGTERM drains and exits 0.\n\n"
      "Flags (--name=value or --name value; BYTES accept 1048576, 1MiB, 4GiB, 1GB):\n");
  for (const FlagDef& f : Flags()) {
    absl::StrAppend(&out, "  --", f.name, "=", f.value, "  (default: ", f.show_default(defaults),
                    ")\n");
    // Wrap the help text at about 96 columns.
    std::string line = "      ";
    for (absl::string_view word : absl::StrSplit(f.help, ' ')) {
      if (line.size() + word.size() > 96 && line.size() > 6) {
        absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
        line = "      ";
      }
      absl::StrAppend(&line, word, " ");
    }
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  absl::StrAppend(&out,
                  "  --flagfile=FILE\n"
                  "      Read flags from FILE, one per line (\"--listen=0.0.0.0:50051\"); lines "
                  "starting with # are comments.\n"
                  "  --help     Print this text and exit.\n"
                  "  --version  Print the version and exit.\n");
  return out;
}

}  // namespace atp::service
