// atp_encoder: runs a host-side transformer encoder whose attention and low-rank linear layers are
// offloaded to a pool of atp workers, computes the same encoder in-process on the CPU backend, and
// prints per-layer time, bytes moved, ranks chosen and the agreement of the two. The README's main
// job (tools/run.sh) starts the workers and runs this.
//
//   atp_encoder --targets=127.0.0.1:50051,127.0.0.1:50052 [--batch=16 --length=256 ...]
// `atp_encoder --help` lists every option.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "atp/client/pool.h"
#include "atp/kernels/backend.h"
#include "encoder.h"

namespace {

using atp::examples::EncoderConfig;
using atp::examples::LayerStats;

constexpr char kUsage[] =
    R"(atp_encoder - a transformer encoder whose heavy layers run on atp workers

Usage: atp_encoder --targets=HOST:PORT[,HOST:PORT...] [options]

Offloads every block's attention (ATP attention) and both FFN maps (low-rank linear; the
up-projection returns its output factored) to a pool of atp workers through the client SDK,
computes the same encoder in-process on the CPU backend as the reference, and prints per-layer
time, bytes moved, ranks chosen and the agreement of the two.

Options (--name=value or --name value):
  --targets=LIST      workers: host:port or dns:///name:port, comma-separated (required)
  --batch=N           sequences (default 16)
  --length=N          tokens per sequence (default 256)
  --blocks=N          encoder blocks (default 4)
  --d-model=N         model width (default 256)
  --heads=N           attention heads (default 8)
  --kv-heads=N        key/value heads (default 2)
  --d-ff=N            FFN width (default 1024)
  --seed=N            weights and tokens (default 1)
  --attention-rank=P  rank policy of the attention layers (default "energy 0.99 max 64")
  --ffn-up-rank=P     of the FFN up-projections (default "energy 0.99 max 64")
  --ffn-down-rank=P   of the FFN down-projections (default "energy 0.95 max 128")
  --repeat=N          offloaded runs, the fastest reported (default 1)
  --local-threads=N   threads of the in-process reference on the CPU (default 0: all cores)
  --reference-backend=cpu|cuda|auto  where the in-process reference computes (default cpu; give
                      the workers' backend to compare like with like, e.g. auto on a GPU host)
  --dense=on|off      also compute the same weights with exact attention and dense FFN maps, and
                      print how far the ATP encoder is from it (default off: they are different
                      functions, ATP models are fine-tuned with ATP)
  --progress=auto|on|off  progress bar on stderr (auto: when stderr is a terminal)
  --json=FILE         also write the figures as JSON (for bench/client)
  --tls-ca=FILE, --token-file=FILE   TLS CA and bearer token for the workers
)";

struct Flags {
  std::vector<std::string> targets;
  int64_t batch = 16, length = 256, repeat = 1, local_threads = 0;
  EncoderConfig config;
  bool dense = false;
  std::string progress = "auto";
  std::string json, tls_ca, token_file;
  std::string reference_backend = "cpu";
};

bool ParseFlags(int argc, char** argv, Flags* f, std::string* error) {
  std::map<std::string, int64_t*> ints = {
      {"batch", &f->batch},          {"length", &f->length},
      {"repeat", &f->repeat},        {"local-threads", &f->local_threads},
      {"blocks", &f->config.blocks}, {"d-model", &f->config.d_model},
      {"heads", &f->config.heads},   {"kv-heads", &f->config.kv_heads},
      {"d-ff", &f->config.d_ff}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      *error = "help";
      return false;
    }
    if (arg.rfind("--", 0) != 0) {
      *error = absl::StrCat("unexpected argument \"", arg, "\"");
      return false;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      *error = absl::StrCat("--", name, " needs a value");
      return false;
    }
    if (auto it = ints.find(name); it != ints.end()) {
      if (!absl::SimpleAtoi(value, it->second) || *it->second < (name == "local-threads" ? 0 : 1)) {
        *error = absl::StrCat("--", name, " is \"", value, "\", want a positive integer");
        return false;
      }
    } else if (name == "attention-rank" || name == "ffn-up-rank" || name == "ffn-down-rank") {
      absl::StatusOr<atp::client::RankPolicy> policy = atp::client::ParseRankPolicy(value);
      if (!policy.ok()) {
        *error = absl::StrCat("--", name, ": ", policy.status().message());
        return false;
      }
      (name == "attention-rank" ? f->config.attention_rank
       : name == "ffn-up-rank"  ? f->config.ffn_up_rank
                                : f->config.ffn_down_rank) = *policy;
    } else if (name == "targets") {
      f->targets = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (name == "seed") {
      if (!absl::SimpleAtoi(value, &f->config.seed)) {
        *error = absl::StrCat("--seed is \"", value, "\", want an integer");
        return false;
      }
    } else if (name == "dense") {
      if (value != "on" && value != "off") {
        *error = "--dense wants on or off";
        return false;
      }
      f->dense = value == "on";
    } else if (name == "progress") {
      if (value != "auto" && value != "on" && value != "off") {
        *error = "--progress wants auto, on or off";
        return false;
      }
      f->progress = value;
    } else if (name == "reference-backend") {
      if (value != "cpu" && value != "cuda" && value != "auto") {
        *error = "--reference-backend wants cpu, cuda or auto";
        return false;
      }
      f->reference_backend = value;
    } else if (name == "json") {
      f->json = value;
    } else if (name == "tls-ca") {
      f->tls_ca = value;
    } else if (name == "token-file") {
      f->token_file = value;
    } else {
      *error = absl::StrCat("unknown option --", name);
      return false;
    }
  }
  if (f->targets.empty()) {
    *error = "--targets is required (host:port of each worker, comma-separated)";
    return false;
  }
  return true;
}

// A one-line progress bar on stderr, redrawn at most ten times a second.
class ProgressBar {
 public:
  ProgressBar(bool enabled, int64_t total) : enabled_(enabled), total_(total) {}

  void Done() {
    absl::MutexLock lock(&mu_);
    ++done_;
  }
  void Draw(bool final = false) {
    if (!enabled_) return;
    int64_t done;
    {
      absl::MutexLock lock(&mu_);
      done = done_;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    constexpr int kWidth = 32;
    const int filled = total_ == 0 ? kWidth : static_cast<int>(kWidth * done / total_);
    const double s = std::chrono::duration<double>(now - start_).count();
    std::fprintf(stderr, "\r  [%s%s] %lld/%lld requests  %.1f s", std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, '.').c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), s);
    if (final) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  const bool enabled_;
  const int64_t total_;
  absl::Mutex mu_;
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_;
};

std::string Bytes(uint64_t b) {
  if (b >= (uint64_t{1} << 20)) return absl::StrFormat("%.1f MiB", b / 1048576.0);
  if (b >= 1024) return absl::StrFormat("%.1f KiB", b / 1024.0);
  return absl::StrCat(b, " B");
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int Fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "atp_encoder: %s: %s\n", what.c_str(), std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  std::string error;
  if (!ParseFlags(argc, argv, &flags, &error)) {
    if (error == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "atp_encoder: %s (see --help)\n", error.c_str());
    return 2;
  }
  const EncoderConfig& c = flags.config;
  const bool progress =
      flags.progress == "on" || (flags.progress == "auto" && ::isatty(STDERR_FILENO));
  std::printf(
      "atp encoder: %lld blocks, d_model %lld (%lld heads, %lld KV heads), d_ff %lld; "
      "batch of %lld sequences x %lld tokens\n",
      static_cast<long long>(c.blocks), static_cast<long long>(c.d_model),
      static_cast<long long>(c.heads), static_cast<long long>(c.kv_heads),
      static_cast<long long>(c.d_ff), static_cast<long long>(flags.batch),
      static_cast<long long>(flags.length));

  absl::StatusOr<atp::examples::EncoderWeights> weights = atp::examples::GenerateWeights(c);
  if (!weights.ok()) return Fail("weights", weights.status());
  const auto tokens = atp::examples::GenerateTokens(c, flags.batch, flags.length, c.seed + 1);

  // The pool: every worker ready, every layer registered on every worker.
  atp::client::PoolOptions options;
  options.client.tls.ca_file = flags.tls_ca;
  options.client.bearer_token_file = flags.token_file;
  auto pool = atp::client::Pool::Create(flags.targets, options);
  if (!pool.ok()) return Fail("pool", pool.status());
  // Every worker named, for a few seconds; then any one will do (the pool uses the others once
  // they are ready).
  const int named = static_cast<int>((*pool)->Workers().size());
  if (!(*pool)->WaitUntilReady(std::max(named, 1), absl::Now() + absl::Seconds(5)).ok()) {
    if (auto s = (*pool)->WaitUntilReady(1, absl::Now() + absl::Seconds(60)); !s.ok()) {
      return Fail("pool", s);
    }
  }
  std::vector<std::string> ready;
  for (const auto& w : (*pool)->Workers()) {
    if (w.readiness == atp::client::Readiness::kServing) ready.push_back(w.address);
  }
  std::printf("pool: %zu of %zu workers ready (%s)\n", ready.size(), (*pool)->Workers().size(),
              absl::StrJoin(ready, ", ").c_str());
  auto t = std::chrono::steady_clock::now();
  uint64_t weight_bytes = 0;
  for (const auto& b : weights->blocks) {
    for (const atp::client::LayerSpec* spec : {&b.attention, &b.ffn_up, &b.ffn_down}) {
      if (auto s = (*pool)->RegisterLayer(*spec); !s.ok()) return Fail("register", s);
      weight_bytes += spec->weight_bytes();
    }
  }
  std::printf("registered %lld layers (%s of weights) on the pool in %.2f s\n",
              static_cast<long long>(3 * c.blocks), Bytes(weight_bytes).c_str(), Seconds(t));

  // The in-process reference first (its per-layer outputs are kept to compare with).
  std::unique_ptr<atp::kernels::Backend> backend;
  if (flags.reference_backend == "cpu") {
    backend = atp::kernels::CreateCpuBackend({.threads = static_cast<int>(flags.local_threads)});
  } else {
    auto b = atp::kernels::CreateBackend(flags.reference_backend);
    if (!b.ok()) return Fail("reference backend", b.status());
    backend = *std::move(b);
  }
  std::printf("in-process reference (%s backend: %s)...\n", backend->name().c_str(),
              backend->device_description().c_str());
  std::fflush(stdout);
  auto local_ops = atp::examples::LocalOps(backend.get(), *weights);
  if (!local_ops.ok()) return Fail("reference", local_ops.status());
  std::vector<std::vector<std::vector<float>>> ref_layers;
  std::vector<LayerStats> ref_stats;
  t = std::chrono::steady_clock::now();
  auto reference = atp::examples::RunEncoder(
      *weights, tokens, **local_ops, &ref_stats,
      [&](size_t, const std::vector<std::vector<float>>& out) { ref_layers.push_back(out); });
  const double ref_s = Seconds(t);
  if (!reference.ok()) return Fail("reference", reference.status());

  // The offloaded runs.
  std::vector<LayerStats> best_stats;
  std::vector<double> layer_err(ref_layers.size(), 0.0);
  double best_s = 0;
  absl::StatusOr<std::vector<atp::client::Tensor>> offloaded;
  for (int64_t rep = 0; rep < flags.repeat; ++rep) {
    std::printf("offloaded run%s...\n",
                flags.repeat > 1 ? absl::StrCat(" ", rep + 1, "/", flags.repeat).c_str() : "");
    std::fflush(stdout);
    ProgressBar bar(progress, 3 * c.blocks * flags.batch);
    auto remote_ops = atp::examples::RemoteOps(
        pool->get(), [&bar] { bar.Done(); }, [&bar] { bar.Draw(); });
    std::vector<LayerStats> stats;
    t = std::chrono::steady_clock::now();
    offloaded = atp::examples::RunEncoder(
        *weights, tokens, *remote_ops, &stats,
        [&](size_t i, const std::vector<std::vector<float>>& out) {
          if (i < ref_layers.size())
            layer_err[i] = atp::examples::RelativeError(out, ref_layers[i]);
        });
    const double s = Seconds(t);
    bar.Draw(/*final=*/true);
    if (!offloaded.ok()) return Fail("offloaded run", offloaded.status());
    if (rep == 0 || s < best_s) {
      best_s = s;
      best_stats = std::move(stats);
    }
  }

  // The table.
  std::printf("\n%-20s %-30s %9s %9s %10s %10s %10s %10s %16s %10s\n", "layer", "op", "time ms",
              "local ms", "sent", "received", "dense", "worker ms", "rank min/avg/max", "rel.err");
  uint64_t sent = 0, received = 0, dense_bytes = 0;
  for (size_t i = 0; i < best_stats.size(); ++i) {
    const LayerStats& s = best_stats[i];
    const auto [lo, hi] = std::minmax_element(s.ranks.begin(), s.ranks.end());
    double avg = 0;
    for (int64_t r : s.ranks) avg += static_cast<double>(r) / s.ranks.size();
    std::printf("%-20s %-30s %9.1f %9.1f %10s %10s %10s %10.1f %5lld/%5.1f/%4lld %10.1e\n",
                s.name.c_str(), s.op.c_str(), s.ms, i < ref_stats.size() ? ref_stats[i].ms : 0.0,
                Bytes(s.bytes_sent).c_str(), Bytes(s.bytes_received).c_str(),
                Bytes(s.dense_bytes).c_str(), s.worker_compute_ms, static_cast<long long>(*lo), avg,
                static_cast<long long>(*hi), layer_err[i]);
    sent += s.bytes_sent;
    received += s.bytes_received;
    dense_bytes += s.dense_bytes;
  }
  const double agreement = atp::examples::RelativeError(*offloaded, *reference);
  std::printf("%-20s %-30s %9.1f %9.1f %10s %10s %10s\n", "total", "", best_s * 1e3, ref_s * 1e3,
              Bytes(sent).c_str(), Bytes(received).c_str(), Bytes(dense_bytes).c_str());
  std::printf("\noffloaded encoder: %.2f s (%.1f sequences/s); in-process: %.2f s (%.1f/s)\n",
              best_s, flags.batch / best_s, ref_s, flags.batch / ref_s);
  std::printf("bytes moved: %s (a dense transfer of the same layers would move %s: %.0f%%)\n",
              Bytes(sent + received).c_str(), Bytes(dense_bytes).c_str(),
              100.0 * (sent + received) / std::max<uint64_t>(dense_bytes, 1));
  std::printf(
      "agreement: the offloaded output vs the in-process reference: relative error %.1e "
      "(Frobenius, whole batch)\n",
      agreement);
  double dense_diff = -1;
  if (flags.dense) {
    auto dense = atp::examples::RunDenseEncoder(backend.get(), *weights, tokens);
    if (!dense.ok()) return Fail("dense reference", dense.status());
    dense_diff = atp::examples::RelativeError(*offloaded, *dense);
    std::printf(
        "the same weights with exact attention and dense FFN maps give an output at relative "
        "difference %.3f: a different function (ATP models are fine-tuned with ATP)\n",
        dense_diff);
  }
  const bool agree = agreement < 1e-4;
  std::printf("%s\n", agree ? "ok: the offloaded encoder matches its in-process reference"
                            : "MISMATCH: the offloaded encoder disagrees with its reference");

  if (!flags.json.empty()) {
    std::ofstream json(flags.json);
    json << "{\"batch\":" << flags.batch << ",\"length\":" << flags.length
         << ",\"blocks\":" << c.blocks << ",\"workers\":" << ready.size()
         << ",\"offloaded_s\":" << best_s << ",\"local_s\":" << ref_s
         << ",\"bytes_moved\":" << sent + received << ",\"dense_bytes\":" << dense_bytes
         << ",\"relative_error\":" << agreement << ",\"dense_difference\":" << dense_diff
         << ",\"layers\":[";
    for (size_t i = 0; i < best_stats.size(); ++i) {
      const LayerStats& s = best_stats[i];
      json << (i ? "," : "") << "{\"name\":\"" << s.name << "\",\"ms\":" << s.ms
           << ",\"local_ms\":" << (i < ref_stats.size() ? ref_stats[i].ms : 0.0)
           << ",\"bytes\":" << s.bytes_sent + s.bytes_received << "}";
    }
    json << "]}\n";
  }
  return agree ? 0 : 1;
}
