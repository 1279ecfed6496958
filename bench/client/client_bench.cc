// Client SDK benchmarks (bench/client/run.sh starts the workers and runs these):
//
//   --mode=throughput  pool throughput on a fixed workload of ATP attention requests, every request
//                      submitted at once and scheduled by the pool over --targets; the anchor is
//                      the same workload computed in this process on the CPU backend, same run.
//   --mode=transfer    the client's send path: a large factored input (u [L, 512] + c [512, 64],
//                      --mib MiB) through a low-rank linear layer with a small dense output,
//                      reporting the transfer-only rate and the client's own user and system CPU
//                      time per GiB moved, beside a memcpy and a CRC-32C of the same bytes
//                      (anchors, same run): the send path reads the caller's buffer once in user
//                      space (its CRC-32C) and copies nothing; the kernel's socket copy is system
//                      time.
// Prints one JSON object per line.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "atp/client/pool.h"
#include "atp/kernels/backend.h"
#include "atp/wire/crc32c.h"

namespace {

using namespace atp;  // NOLINT: a benchmark driver

struct Flags {
  std::string mode = "throughput";
  std::vector<std::string> targets;
  int64_t requests = 96, length = 512, d_model = 256, heads = 8, kv_heads = 2;
  int64_t inflight = 4, rounds = 3, local_threads = 0, mib = 256;
};

bool Parse(int argc, char** argv, Flags* f) {
  std::map<std::string, int64_t*> ints = {{"requests", &f->requests},
                                          {"length", &f->length},
                                          {"d-model", &f->d_model},
                                          {"heads", &f->heads},
                                          {"kv-heads", &f->kv_heads},
                                          {"inflight", &f->inflight},
                                          {"rounds", &f->rounds},
                                          {"local-threads", &f->local_threads},
                                          {"mib", &f->mib}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const size_t eq = a.find('=');
    if (a.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "client_bench: want --name=value, got %s\n", a.c_str());
      return false;
    }
    const std::string name = a.substr(2, eq - 2), value = a.substr(eq + 1);
    if (auto it = ints.find(name); it != ints.end()) {
      if (!absl::SimpleAtoi(value, it->second)) return false;
    } else if (name == "targets") {
      f->targets = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (name == "mode") {
      f->mode = value;
    } else {
      std::fprintf(stderr, "client_bench: unknown --%s\n", name.c_str());
      return false;
    }
  }
  return !f->targets.empty();
}

std::vector<float> Random(int64_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::unique_ptr<client::Pool> OpenPool(const Flags& f) {
  client::PoolOptions o;
  o.max_inflight_per_worker = static_cast<int>(f.inflight);
  auto pool = client::Pool::Create(f.targets, o);
  if (!pool.ok() ||
      !(*pool)
           ->WaitUntilReady(static_cast<int>(f.targets.size()), absl::Now() + absl::Seconds(60))
           .ok()) {
    std::fprintf(stderr, "client_bench: the pool is not ready\n");
    return nullptr;
  }
  return *std::move(pool);
}

int Throughput(const Flags& f) {
  const int64_t d = f.d_model, dh = d / f.heads, q = f.heads * dh, kv = f.kv_heads * dh;
  std::map<std::string, client::Tensor> w;
  w.emplace("q_proj.weight", client::Tensor::FromF32({q, d}, Random(q * d, 1, 0.06f)));
  w.emplace("k_proj.weight", client::Tensor::FromF32({kv, d}, Random(kv * d, 2, 0.06f)));
  w.emplace("v_proj.weight", client::Tensor::FromF32({kv, d}, Random(kv * d, 3, 0.06f)));
  w.emplace("o_proj.weight", client::Tensor::FromF32({d, q}, Random(d * q, 4, 0.06f)));
  auto spec = client::LayerSpec::Attention(
      "bench.attn",
      {.d_model = d, .num_heads = f.heads, .num_kv_heads = f.kv_heads, .head_dim = dh},
      std::move(w));
  if (!spec.ok()) return 1;
  // Inputs with a low-rank part (16 directions) plus noise; a fixed rank keeps the work equal.
  std::vector<std::vector<float>> xs;
  for (int64_t i = 0; i < std::min<int64_t>(f.requests, 8); ++i) {
    std::vector<float> a = Random(f.length * 16, 10 + i, 1.0f), b = Random(16 * d, 20 + i, 1.0f);
    std::vector<float> x = Random(f.length * d, 30 + i, 0.01f);
    for (int64_t r = 0; r < f.length; ++r) {
      for (int k = 0; k < 16; ++k) {
        for (int64_t j = 0; j < d; ++j) x[r * d + j] += a[r * 16 + k] * b[k * d + j];
      }
    }
    xs.push_back(std::move(x));
  }
  const auto rank = client::RankPolicy::Fixed(32);
  std::vector<client::AtpAttentionRequest> requests;
  for (int64_t i = 0; i < f.requests; ++i) {
    requests.push_back({.layer_id = "bench.attn",
                        .x = client::TensorView::F32(xs[i % xs.size()].data(), {f.length, d}),
                        .rank = rank});
  }

  // In-process anchor: the same requests on the CPU backend.
  auto backend = kernels::CreateCpuBackend({.threads = static_cast<int>(f.local_threads)});
  kernels::LayerSpec kspec;
  kspec.kind = kernels::LayerSpec::Kind::kAttention;
  kspec.attention = {
      .d_model = d, .num_heads = f.heads, .num_kv_heads = f.kv_heads, .head_dim = dh};
  for (const auto& [name, t] : spec->weights()) {
    kspec.weights.emplace(name, kernels::Tensor::FromF32(t.shape(), t.ToF32()));
  }
  auto layer = backend->LoadLayer(std::move(kspec));
  if (!layer.ok()) return 1;
  double local_best = 1e30;
  for (int64_t round = 0; round < f.rounds; ++round) {
    const auto t = std::chrono::steady_clock::now();
    for (const auto& r : requests) {
      kernels::AtpAttentionArgs args;
      args.x = kernels::TensorView{kernels::DType::kF32, r.x.shape, r.x.data};
      args.rank = kernels::RankPolicy::Fixed(32);
      if (!backend->AtpAttention(**layer, args, {}).ok()) return 1;
    }
    local_best = std::min(local_best, Since(t));
  }

  auto pool = OpenPool(f);
  if (!pool || !pool->RegisterLayer(*spec).ok()) return 1;
  (void)pool->AtpAttentionBatch(absl::MakeSpan(requests).subspan(0, f.targets.size()));  // warm up
  double best = 1e30;
  uint64_t bytes = 0;
  std::map<std::string, int> per_worker;
  for (int64_t round = 0; round < f.rounds; ++round) {
    const auto t = std::chrono::steady_clock::now();
    auto results = pool->AtpAttentionBatch(requests);
    const double s = Since(t);
    std::map<std::string, int> counts;
    uint64_t b = 0;
    for (const auto& r : results) {
      if (!r.ok()) {
        std::fprintf(stderr, "client_bench: %s\n", r.status().ToString().c_str());
        return 1;
      }
      ++counts[r->info.worker];
      b += r->info.bytes_sent + r->info.bytes_received;
    }
    if (s < best) {
      best = s;
      bytes = b;
      per_worker = counts;
    }
  }
  std::vector<std::string> split;
  for (const auto& [w, n] : per_worker) split.push_back(absl::StrCat("\"", w, "\":", n));
  std::printf(
      "{\"mode\":\"throughput\",\"workers\":%zu,\"requests\":%lld,\"length\":%lld,\"d_model\":%lld,"
      "\"pool_s\":%.4f,\"pool_req_per_s\":%.2f,\"pool_mib_per_s\":%.1f,\"local_s\":%.4f,"
      "\"local_req_per_s\":%.2f,\"per_worker\":{%s}}\n",
      f.targets.size(), static_cast<long long>(f.requests), static_cast<long long>(f.length),
      static_cast<long long>(d), best, f.requests / best, bytes / best / 1048576.0, local_best,
      f.requests / local_best, absl::StrJoin(split, ",").c_str());
  return 0;
}

// User and system CPU seconds of this process.
std::pair<double, double> Cpu() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return {u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6,
          u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6};
}

int Transfer(const Flags& f) {
  // Send-heavy: a factored input u [L, 512] + c [512, 64] (--mib MiB) through a 64 x 64 linear
  // layer with a dense output y [L, 64] (1/8 of the input): the client's CPU is mostly its send
  // path. L stays within the worker's max_sequence_length.
  constexpr int64_t kR = 512, kD = 64;
  const int64_t rows = f.mib * 1048576 / (kR * 4);
  auto spec = client::LayerSpec::Linear(
      "bench.copy", client::Tensor::FromF32({kD, kD}, Random(kD * kD, 1, 0.1f)));
  if (!spec.ok()) return 1;
  const std::vector<float> u = Random(rows * kR, 2, 1.0f), c = Random(kR * kD, 3, 1.0f);
  auto pool = OpenPool(f);
  if (!pool || !pool->RegisterLayer(*spec).ok()) return 1;
  const client::LowRankLinearRequest request{
      .layer_id = "bench.copy",
      .input = client::FactoredTensorView{client::TensorView::F32(u.data(), {rows, kR}),
                                          client::TensorView::F32(c.data(), {kR, kD})}};
  const uint64_t u_bytes = u.size() * sizeof(float);
  std::vector<uint8_t> copy(u_bytes);
  std::memset(copy.data(), 1, copy.size());  // fault the pages in before timing memcpy
  double best_transfer = 1e30, round_trip = 0, receive = 0, compute = 0;
  double user_per_gib = 0, sys_per_gib = 0, gib_sent = 0, gib_received = 0;
  double memcpy_per_gib = 1e30, crc_per_gib = 1e30;
  for (int64_t round = 0; round < f.rounds; ++round) {
    const auto [user0, sys0] = Cpu();
    const auto t = std::chrono::steady_clock::now();
    auto r = pool->LowRankLinear(request);
    const double s = Since(t);
    const auto [user1, sys1] = Cpu();
    if (!r.ok()) {
      std::fprintf(stderr, "client_bench: %s\n", r.status().ToString().c_str());
      return 1;
    }
    const double moved = static_cast<double>(r->info.bytes_sent + r->info.bytes_received);
    const double transfer = s - absl::ToDoubleSeconds(r->info.compute_time + r->info.queue_time);
    if (transfer < best_transfer) {
      best_transfer = transfer;
      round_trip = s;
      receive = absl::ToDoubleSeconds(r->info.receive_time);
      compute = absl::ToDoubleSeconds(r->info.compute_time);
      gib_sent = r->info.bytes_sent / double(1 << 30);
      gib_received = r->info.bytes_received / double(1 << 30);
      user_per_gib = (user1 - user0) / (moved / (1 << 30));
      sys_per_gib = (sys1 - sys0) / (moved / (1 << 30));
    }
    // Anchors over the caller's input bytes, in this process.
    auto t2 = std::chrono::steady_clock::now();
    std::memcpy(copy.data(), u.data(), u_bytes);
    memcpy_per_gib = std::min(memcpy_per_gib, Since(t2) / (u_bytes / double(1 << 30)));
    t2 = std::chrono::steady_clock::now();
    volatile uint32_t crc = wire::Crc32c(u.data(), u_bytes);
    (void)crc;
    crc_per_gib = std::min(crc_per_gib, Since(t2) / (u_bytes / double(1 << 30)));
  }
  std::printf(
      "{\"mode\":\"transfer\",\"gib_sent\":%.3f,\"gib_received\":%.3f,\"round_trip_s\":%.4f,"
      "\"worker_receive_s\":%.4f,\"worker_compute_s\":%.4f,\"transfer_only_gb_per_s\":%.3f,"
      "\"client_user_cpu_s_per_gib\":%.4f,\"client_sys_cpu_s_per_gib\":%.4f,"
      "\"memcpy_s_per_gib\":%.4f,\"crc32c_s_per_gib\":%.4f}\n",
      gib_sent, gib_received, round_trip, receive, compute,
      (gib_sent + gib_received) * (1 << 30) / best_transfer / 1e9, user_per_gib, sys_per_gib,
      memcpy_per_gib, crc_per_gib);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (!Parse(argc, argv, &f)) {
    std::fprintf(stderr,
                 "usage: client_bench --targets=H:P[,H:P...] [--mode=throughput|transfer] "
                 "[--requests=96 --length=512 --d-model=256 --heads=8 --kv-heads=2 --inflight=4 "
                 "--rounds=3 --local-threads=0 --mib=256]\n");
    return 2;
  }
  return f.mode == "transfer" ? Transfer(f) : Throughput(f);
}
