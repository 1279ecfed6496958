// Pool scaling and failover across several atp workers (issue 7), driven through the client SDK.
//
// The workers are started by the caller (bench/multi_gpu/run.sh: one `atp-worker` per GPU, or
// several sharing one) and named by --targets, with their process ids in --pids so that one of
// them can be killed. On a fixed workload of ATP attention layers (random weights, a few distinct
// random inputs that are nearly low-rank, fixed rank r) the driver
//   1. computes a reference output for every (layer, input) pair on the first worker alone;
//   2. for each worker count n in --counts: a Pool over the first n workers runs the same number
//      of requests (--requests) with --inflight-per-worker × n of them in flight (after a warm-up
//      of one such window), and reports requests/s, GB/s of payload moved and the scaling ratio
//      against the first count;
//   3. with all workers, runs --kill-requests requests and SIGKILLs one worker (--kill-worker,
//      default the last) once --kill-after of them have completed; every request must still
//      complete. It reports the failover pause: the time from the kill to the next completion and
//      the longest gap between completions after the kill (beside the longest before it).
// Every result of every phase is compared with the reference of its (layer, input): byte for byte
// first (the same code on the same device model normally gives identical bytes), else by the
// relative Frobenius error, which must be <= --tolerance. A result that is wrong or missing makes
// the exit status 1; usage and setup errors exit 2.
//
// Usage: atp_pool_scaling --targets=H:P,H:P,... [--pids=PID,PID,...] [--counts=1,2,4]
//   [--length=16384] [--d-model=4096] [--heads=32] [--kv-heads=0] [--head-dim=128] [--rank=512]
//   [--dtype=bf16|f32] [--layers=2] [--inputs=3] [--requests=48] [--target-seconds=15]
//   [--inflight-per-worker=4] [--kill-requests=N] [--kill-after=0.3] [--kill-worker=INDEX]
//   [--tolerance=1e-2]
//   [--timeout=120] [--phase-timeout=300] [--verify-threads=N] [--max-attempts=5] [--budget=S]
//   [--json=PATH] [--note=TEXT] [--corrupt-reference]
// --requests=0 sizes the run from the reference step: as many requests as one worker running them
// one after another finishes in --target-seconds (16 to 256, and at least two windows of the
// largest pool). --budget: once this many seconds have
// passed, the remaining worker counts of step 2 are skipped (and said so) so that the failover step
// still runs. Self-tests of the check: --corrupt-reference swaps two references, and
// --max-attempts=1 turns off replay, so the run must fail.
#include <malloc.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "atp/client/layer.h"
#include "atp/client/pool.h"
#include "atp/client/tensor.h"

namespace atp::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Flags {
  std::vector<std::string> targets;
  std::vector<pid_t> pids;
  std::vector<int> counts;
  int64_t length = 16384;
  int64_t d_model = 4096;
  int64_t heads = 32;
  int64_t kv_heads = 0;
  int64_t head_dim = 128;
  int64_t rank = 512;
  client::DType dtype = client::DType::kBF16;
  int layers = 2;
  int inputs = 3;
  int requests = 48;  // 0: sized from the reference step (--target-seconds)
  double target_seconds = 15;
  int inflight_per_worker = 4;
  int kill_requests = 0;  // 0: --requests
  double kill_after = 0.3;
  int kill_worker = -1;  // -1: the last
  double tolerance = 1e-2;
  double timeout_s = 120;
  double phase_timeout_s = 300;
  int verify_threads = 0;  // 0: a quarter of the cores, 1 to 4
  int max_attempts = 5;
  double budget_s = 0;  // 0: none
  std::string json_path;
  std::string note;
  bool corrupt_reference = false;
};

[[noreturn]] void Usage(const std::string& problem) {
  std::fprintf(stderr,
               "atp_pool_scaling: %s\n"
               "usage: atp_pool_scaling --targets=H:P,... [--pids=PID,...] [--counts=1,2,4] "
               "[--length=N] [--d-model=N] [--heads=N] [--kv-heads=N] [--head-dim=N] [--rank=N] "
               "[--dtype=bf16|f32] [--layers=N] [--inputs=N] [--requests=N] [--target-seconds=S] "
               "[--inflight-per-worker=N] [--kill-requests=N] [--kill-after=F] "
               "[--kill-worker=I] [--tolerance=F] [--timeout=S] [--phase-timeout=S] "
               "[--verify-threads=N] [--max-attempts=N] [--budget=S] [--json=PATH] [--note=TEXT] "
               "[--corrupt-reference]\n",
               problem.c_str());
  std::exit(2);
}

template <typename T>
T ParseNumber(absl::string_view flag, absl::string_view text, T lo, T hi) {
  T value{};
  bool ok;
  if constexpr (std::is_floating_point_v<T>) {
    double d;
    ok = absl::SimpleAtod(text, &d);
    value = static_cast<T>(d);
  } else {
    int64_t n;
    ok = absl::SimpleAtoi(text, &n);
    value = static_cast<T>(n);
  }
  if (!ok || !(value >= lo) || !(value <= hi)) {
    Usage(
        absl::StrCat("--", flag, "=", text, " is not valid, want a number from ", lo, " to ", hi));
  }
  return value;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--corrupt-reference") {
      f.corrupt_reference = true;
      continue;
    }
    if (!absl::ConsumePrefix(&arg, "--")) Usage(absl::StrCat("unexpected argument ", argv[i]));
    const size_t eq = arg.find('=');
    if (eq == absl::string_view::npos) Usage(absl::StrCat("--", arg, " needs =VALUE"));
    const absl::string_view name = arg.substr(0, eq);
    const absl::string_view value = arg.substr(eq + 1);
    if (name == "targets") {
      for (absl::string_view t : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        f.targets.emplace_back(t);
      }
    } else if (name == "pids") {
      for (absl::string_view p : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        f.pids.push_back(ParseNumber<pid_t>("pids", p, 1, std::numeric_limits<pid_t>::max()));
      }
    } else if (name == "counts") {
      for (absl::string_view c : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        f.counts.push_back(ParseNumber<int>("counts", c, 1, 1024));
      }
    } else if (name == "length") {
      f.length = ParseNumber<int64_t>(name, value, 1, int64_t{1} << 24);
    } else if (name == "d-model") {
      f.d_model = ParseNumber<int64_t>(name, value, 1, int64_t{1} << 16);
    } else if (name == "heads") {
      f.heads = ParseNumber<int64_t>(name, value, 1, 4096);
    } else if (name == "kv-heads") {
      f.kv_heads = ParseNumber<int64_t>(name, value, 0, 4096);
    } else if (name == "head-dim") {
      f.head_dim = ParseNumber<int64_t>(name, value, 1, 4096);
    } else if (name == "rank") {
      f.rank = ParseNumber<int64_t>(name, value, 1, int64_t{1} << 16);
    } else if (name == "dtype") {
      if (value == "bf16") {
        f.dtype = client::DType::kBF16;
      } else if (value == "f32") {
        f.dtype = client::DType::kF32;
      } else {
        Usage(absl::StrCat("--dtype=", value, " is not valid, want bf16 or f32"));
      }
    } else if (name == "layers") {
      f.layers = ParseNumber<int>(name, value, 1, 64);
    } else if (name == "inputs") {
      f.inputs = ParseNumber<int>(name, value, 1, 64);
    } else if (name == "requests") {
      f.requests = ParseNumber<int>(name, value, 0, 1 << 20);
    } else if (name == "target-seconds") {
      f.target_seconds = ParseNumber<double>(name, value, 0.1, 36000.0);
    } else if (name == "inflight-per-worker") {
      f.inflight_per_worker = ParseNumber<int>(name, value, 1, 64);
    } else if (name == "kill-requests") {
      f.kill_requests = ParseNumber<int>(name, value, 0, 1 << 20);
    } else if (name == "kill-after") {
      f.kill_after = ParseNumber<double>(name, value, 0.0, 1.0);
    } else if (name == "kill-worker") {
      f.kill_worker = ParseNumber<int>(name, value, -1, 1023);
    } else if (name == "tolerance") {
      f.tolerance = ParseNumber<double>(name, value, 0.0, 10.0);
    } else if (name == "timeout") {
      f.timeout_s = ParseNumber<double>(name, value, 0.1, 3600.0);
    } else if (name == "phase-timeout") {
      f.phase_timeout_s = ParseNumber<double>(name, value, 1.0, 36000.0);
    } else if (name == "verify-threads") {
      f.verify_threads = ParseNumber<int>(name, value, 1, 64);
    } else if (name == "max-attempts") {
      f.max_attempts = ParseNumber<int>(name, value, 1, 100);
    } else if (name == "budget") {
      f.budget_s = ParseNumber<double>(name, value, 0.0, 36000.0);
    } else if (name == "json") {
      f.json_path = std::string(value);
    } else if (name == "note") {
      f.note = std::string(value);
    } else {
      Usage(absl::StrCat("unknown flag --", name));
    }
  }
  if (f.targets.empty()) Usage("--targets is required");
  const int n = static_cast<int>(f.targets.size());
  if (!f.pids.empty() && static_cast<int>(f.pids.size()) != n) {
    Usage(absl::StrCat("--pids names ", f.pids.size(), " processes for ", n, " targets"));
  }
  if (f.counts.empty()) {
    for (int i = 1; i <= n; ++i) f.counts.push_back(i);
  }
  for (int c : f.counts) {
    if (c > n) Usage(absl::StrCat("--counts asks for ", c, " workers; --targets names ", n));
  }
  if (f.kv_heads == 0) f.kv_heads = f.heads;
  if (f.heads % f.kv_heads != 0) {
    Usage(absl::StrCat("--kv-heads=", f.kv_heads, " does not divide --heads=", f.heads));
  }
  if (f.kill_worker >= n) {
    Usage(absl::StrCat("--kill-worker=", f.kill_worker, " but only ", n, " targets"));
  }
  if (f.kill_worker < 0) f.kill_worker = n - 1;
  if (f.rank > std::min(f.length, f.d_model)) {
    Usage(absl::StrCat("--rank=", f.rank,
                       " exceeds min(--length, --d-model) = ", std::min(f.length, f.d_model)));
  }
  if (f.corrupt_reference && f.inputs < 2) Usage("--corrupt-reference needs --inputs >= 2");
  if (f.verify_threads == 0) {
    f.verify_threads = std::clamp<int>(std::thread::hardware_concurrency() / 4, 1, 4);
  }
  return f;
}

// ---- data ---------------------------------------------------------------------------------------

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform values in [-1, 1) from a SplitMix64 stream: the same seed gives the same values.
class Uniform {
 public:
  explicit Uniform(uint64_t seed) : state_(SplitMix64(seed)) {}
  float Next() {
    state_ = SplitMix64(state_);
    return static_cast<float>(static_cast<int64_t>(state_ >> 11) - (int64_t{1} << 52)) *
           (1.0f / static_cast<float>(int64_t{1} << 52));
  }

 private:
  uint64_t state_;
};

uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even (inputs are finite)
  return static_cast<uint16_t>(bits >> 16);
}

float FromBf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Runs fn(begin, end) over [0, rows) split across the machine's cores (at most 16 threads).
template <typename Fn>
void ParallelRows(int64_t rows, Fn fn) {
  const int threads = static_cast<int>(std::clamp<int64_t>(
      std::min<int64_t>(std::thread::hardware_concurrency(), 16), 1, std::max<int64_t>(rows, 1)));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([=] { fn(rows * t / threads, rows * (t + 1) / threads); });
  }
  for (std::thread& th : pool) th.join();
}

// A rows × cols tensor of `dtype` whose row i is fill(i, rng of row i, float* row).
template <typename Fill>
client::Tensor MakeTensor(client::DType dtype, int64_t rows, int64_t cols, uint64_t seed,
                          Fill fill) {
  client::Tensor t(dtype, {rows, cols});
  ParallelRows(rows, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t i = begin; i < end; ++i) {
      Uniform rng(seed * 0x100000001b3ull + static_cast<uint64_t>(i));
      fill(i, rng, row.data());
      if (dtype == client::DType::kBF16) {
        uint16_t* out = t.data_as<uint16_t>() + i * cols;
        for (int64_t j = 0; j < cols; ++j) out[j] = ToBf16(row[j]);
      } else {
        std::memcpy(t.data_as<float>() + i * cols, row.data(), sizeof(float) * cols);
      }
    }
  });
  return t;
}

// Synthetic activations: 8 directions with falling weights plus uniform noise, so the sequence
// is nearly low-rank (the inputs ATP is meant for) and every input differs.
client::Tensor MakeInput(const Flags& f, int index) {
  constexpr int kComponents = 8;
  const uint64_t seed = 1000 + static_cast<uint64_t>(index);
  const int64_t d = f.d_model;
  std::vector<float> directions(static_cast<size_t>(kComponents * d));
  Uniform rng(seed);
  for (float& v : directions) v = rng.Next();
  return MakeTensor(f.dtype, f.length, d, seed, [&](int64_t, Uniform& r, float* row) {
    float coef[kComponents];
    float weight = 2.0f;
    for (float& c : coef) {
      c = weight * r.Next();
      weight *= 0.7f;
    }
    for (int64_t j = 0; j < d; ++j) row[j] = 0.25f * r.Next();
    for (int c = 0; c < kComponents; ++c) {
      const float* dir = directions.data() + c * d;
      for (int64_t j = 0; j < d; ++j) row[j] += coef[c] * dir[j];
    }
  });
}

// An attention layer with weights uniform in ±sqrt(3/in_features) (variance 1/in), no biases.
absl::StatusOr<client::LayerSpec> MakeLayer(const Flags& f, int index) {
  client::AttentionConfig config;
  config.d_model = f.d_model;
  config.num_heads = f.heads;
  config.num_kv_heads = f.kv_heads;
  config.head_dim = f.head_dim;
  const int64_t q_rows = f.heads * f.head_dim;
  const int64_t kv_rows = f.kv_heads * f.head_dim;
  std::map<std::string, client::Tensor> weights;
  const std::pair<const char*, std::pair<int64_t, int64_t>> shapes[] = {
      {"q_proj.weight", {q_rows, f.d_model}},
      {"k_proj.weight", {kv_rows, f.d_model}},
      {"v_proj.weight", {kv_rows, f.d_model}},
      {"o_proj.weight", {f.d_model, q_rows}}};
  uint64_t seed = 77 + 10 * static_cast<uint64_t>(index);
  for (const auto& [name, shape] : shapes) {
    const float scale = std::sqrt(3.0f / static_cast<float>(shape.second));
    const int64_t cols = shape.second;
    weights.emplace(name, MakeTensor(f.dtype, shape.first, cols, seed++,
                                     [scale, cols](int64_t, Uniform& r, float* row) {
                                       for (int64_t j = 0; j < cols; ++j) row[j] = scale * r.Next();
                                     }));
  }
  return client::LayerSpec::Attention(absl::StrCat("bench.attn.", index), config,
                                      std::move(weights));
}

// ---- checking -----------------------------------------------------------------------------------

struct Check {
  bool identical = false;
  double relative_error = 0;  // Frobenius, against the reference
  std::string problem;        // non-empty: the result is wrong
};

// Σ(got − want)² and Σ want² over n elements of type T (converted by `load`); NaN when `got` holds
// a non-finite value.
template <typename T, typename Load>
std::pair<double, double> SquaredSums(const T* got, const T* want, int64_t n, Load load) {
  double diff = 0, norm = 0;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    const float g = load(got[i]), w = load(want[i]);
    finite = finite && std::isfinite(g);
    const double e = static_cast<double>(g) - w;
    diff += e * e;
    norm += static_cast<double>(w) * w;
  }
  return {finite ? diff : NAN, norm};
}

// Σ(got − want)² and Σ want² of two tensors of the same dtype and size (NaN: got is not finite).
std::pair<double, double> SquaredSums(const client::Tensor& got, const client::Tensor& want) {
  if (got.dtype() == client::DType::kBF16) {
    return SquaredSums(got.data_as<uint16_t>(), want.data_as<uint16_t>(), got.num_elements(),
                       FromBf16);
  }
  return SquaredSums(got.data_as<float>(), want.data_as<float>(), got.num_elements(),
                     [](float v) { return v; });
}

Check Compare(const client::Tensor& got, const client::Tensor& want, double tolerance) {
  Check c;
  if (got.dtype() != want.dtype() || got.shape() != want.shape()) {
    c.problem =
        absl::StrCat("got ", client::DTypeName(got.dtype()), client::ShapeString(got.shape()),
                     ", want ", client::DTypeName(want.dtype()), client::ShapeString(want.shape()));
    c.relative_error = INFINITY;
    return c;
  }
  if (std::memcmp(got.data(), want.data(), got.byte_size()) == 0) {
    c.identical = true;
    return c;
  }
  const auto [diff, norm] = SquaredSums(got, want);
  c.relative_error = std::isnan(diff) ? INFINITY : std::sqrt(diff / std::max(norm, 1e-300));
  if (!(c.relative_error <= tolerance)) {
    c.problem =
        absl::StrFormat("relative error %.3g > tolerance %.3g", c.relative_error, tolerance);
  }
  return c;
}

// ---- one phase: a pool, a stream of asynchronous requests, optionally a kill --------------------

struct Workload {
  const Flags* flags = nullptr;
  std::vector<client::LayerSpec> layers;
  std::vector<client::Tensor> inputs;
  // references[layer][input]
  std::vector<std::vector<client::Tensor>> references;

  int LayerOf(int request) const { return request % static_cast<int>(layers.size()); }
  int InputOf(int request) const {
    return (request / static_cast<int>(layers.size())) % static_cast<int>(inputs.size());
  }
  client::AtpAttentionRequest Request(int request) const {
    client::AtpAttentionRequest r;
    r.layer_id = layers[LayerOf(request)].id();
    r.x = inputs[InputOf(request)].view();
    r.rank = client::RankPolicy::Fixed(flags->rank);
    return r;
  }
};

struct RequestRecord {
  int id = -1;            // the request's number in the whole run
  double submitted = -1;  // seconds since the phase began
  double completed = -1;
  bool ok = false;
  std::string error;
  std::string worker;
  int attempts = 0;
  uint64_t bytes = 0;
  double round_trip = 0;
  double compute = 0;  // on the worker
  Check check;
  bool checked = false;
};

struct KillPlan {
  bool enabled = false;
  int after_completions = 0;
  pid_t pid = 0;
  std::string address;
};

struct PhaseResult {
  int workers = 0;
  int requests = 0;
  double elapsed = 0;  // first submission to last completion
  std::vector<RequestRecord> records;
  // Failover.
  bool killed = false;
  double kill_time = -1;
  std::string killed_address;
};

// The state of one phase under one mutex: requests in flight, completions, and the results that
// wait for the checker threads (checking never holds an SDK thread, and the submitter sees both
// the room in the window and the checkers' backlog under the same lock).
class PhaseState {
 public:
  PhaseState(const Workload& workload, int checker_threads, const KillPlan& plan,
             Clock::time_point start)
      : workload_(workload), plan_(plan), start_(start) {
    for (int i = 0; i < checker_threads; ++i) threads_.emplace_back([this] { CheckLoop(); });
  }
  ~PhaseState() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }

  // Waits until fewer than `window` requests are in flight and fewer than `max_unchecked` results
  // wait to be checked, then counts one more in flight. False at the deadline.
  bool Acquire(int window, int max_unchecked, absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto room = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return inflight_ < window && unchecked_ < max_unchecked;
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&room), deadline)) return false;
    ++inflight_;
    return true;
  }

  // A request ended (with `y` to check when it succeeded). Sends the planned SIGKILL when this
  // completion reaches the plan's count. The caller must not touch the state afterwards.
  void Complete(int request, std::optional<client::Tensor> y, RequestRecord* record, double now) {
    absl::MutexLock lock(&mu_);
    record->completed = now;
    if (y.has_value()) {
      queue_.push_back({request, *std::move(y), record});
      ++unchecked_;
    }
    --inflight_;
    ++completed_;
    if (plan_.enabled && kill_time_ < 0 && completed_ >= plan_.after_completions) {
      kill_time_ = SecondsBetween(start_, Clock::now());
      ::kill(plan_.pid, SIGKILL);
    }
  }

  // Seconds from the start to the kill; -1 when none was sent.
  double kill_time() {
    absl::MutexLock lock(&mu_);
    return kill_time_;
  }

  // Waits until nothing is in flight and every result is checked. False at the deadline.
  bool WaitIdle(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto idle = [this]()
                    ABSL_NO_THREAD_SAFETY_ANALYSIS { return inflight_ == 0 && unchecked_ == 0; };
    return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  }

 private:
  struct Item {
    int request;
    client::Tensor y;
    RequestRecord* record;
  };

  void CheckLoop() {
    for (;;) {
      Item item;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stop_ || !queue_.empty(); };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;  // stopping
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      const client::Tensor& want =
          workload_.references[workload_.LayerOf(item.request)][workload_.InputOf(item.request)];
      Check c = Compare(item.y, want, workload_.flags->tolerance);
      absl::MutexLock lock(&mu_);
      item.record->check = std::move(c);
      item.record->checked = true;
      --unchecked_;
    }
  }

  const Workload& workload_;
  const KillPlan plan_;
  const Clock::time_point start_;
  absl::Mutex mu_;
  double kill_time_ ABSL_GUARDED_BY(mu_) = -1;
  int inflight_ ABSL_GUARDED_BY(mu_) = 0;
  int completed_ ABSL_GUARDED_BY(mu_) = 0;
  int unchecked_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

client::PoolOptions PoolOptionsFor(const Flags& f) {
  client::PoolOptions o;
  o.max_inflight_per_worker = f.inflight_per_worker;
  o.client.default_timeout = absl::Seconds(f.timeout_s);
  o.client.max_concurrent_calls = std::max(8, f.inflight_per_worker);
  o.max_attempts = f.max_attempts;
  return o;
}

// Creates a pool over `targets`, waits until every worker is ready and registers the layers.
absl::StatusOr<std::unique_ptr<client::Pool>> OpenPool(const Flags& f, const Workload& w,
                                                       std::vector<std::string> targets) {
  const int n = static_cast<int>(targets.size());
  absl::StatusOr<std::unique_ptr<client::Pool>> pool =
      client::Pool::Create(std::move(targets), PoolOptionsFor(f));
  if (!pool.ok()) return pool.status();
  if (absl::Status s = (*pool)->WaitUntilReady(n, absl::Now() + absl::Seconds(60)); !s.ok()) {
    return s;
  }
  for (const client::LayerSpec& layer : w.layers) {
    client::CallOptions call;
    call.deadline = absl::Now() + absl::Seconds(f.timeout_s);
    if (absl::Status s = (*pool)->RegisterLayer(layer, call); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("registering ", layer.id(), ": ", s.message()));
    }
  }
  return pool;
}

// Runs `count` requests (numbered from `first`) through `pool` with at most `window` in flight;
// records every completion. Kills plan.pid with SIGKILL at the plan's completion count.
PhaseResult RunRequests(const Flags& f, const Workload& w, client::Pool& pool, int first, int count,
                        int window, const KillPlan& plan) {
  PhaseResult result;
  result.requests = count;
  result.records.resize(static_cast<size_t>(count));
  const Clock::time_point start = Clock::now();
  PhaseState state(w, f.verify_threads, plan, start);
  const absl::Time deadline = absl::Now() + absl::Seconds(f.phase_timeout_s);
  const int max_unchecked = std::max(window, 8);
  bool timed_out = false;

  for (int i = 0; i < count; ++i) {
    if (!state.Acquire(window, max_unchecked, deadline)) {
      timed_out = true;
      break;
    }
    RequestRecord* record = &result.records[i];
    record->id = first + i;
    record->submitted = SecondsBetween(start, Clock::now());
    client::CallOptions call;
    call.deadline = absl::Now() + absl::Seconds(f.timeout_s);
    pool.AtpAttentionAsync(
        w.Request(first + i),
        [&, record, request = first + i](absl::StatusOr<client::AttentionResult> r) {
          const double now = SecondsBetween(start, Clock::now());
          std::optional<client::Tensor> y;
          if (r.ok()) {
            record->ok = true;
            record->worker = r->info.worker;
            record->attempts = r->info.attempts;
            record->bytes = r->info.bytes_sent + r->info.bytes_received;
            record->round_trip = absl::ToDoubleSeconds(r->info.round_trip_time);
            record->compute = absl::ToDoubleSeconds(r->info.compute_time);
            y = std::move(r->y);
          } else {
            record->error = r.status().ToString();
          }
          state.Complete(request, std::move(y), record, now);
        },
        call);
  }
  // Every submitted request ends (its callback runs) by its own deadline, so this wait is long
  // enough unless the SDK breaks its contract.
  if (!state.WaitIdle(absl::Now() + absl::Seconds(f.timeout_s + 120))) timed_out = true;
  if (timed_out) {
    // Callbacks that may still run refer to this frame: end the process rather than return.
    std::fprintf(stderr,
                 "atp_pool_scaling: requests did not finish in time (phase limit %.0f s, request "
                 "timeout %.0f s); giving up\n",
                 f.phase_timeout_s, f.timeout_s);
    std::fflush(nullptr);
    std::_Exit(1);
  }
  for (const RequestRecord& r : result.records)
    result.elapsed = std::max(result.elapsed, r.completed);
  result.kill_time = state.kill_time();
  result.killed = result.kill_time >= 0;
  if (result.killed) result.killed_address = plan.address;
  return result;
}

// ---- statistics ---------------------------------------------------------------------------------

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::min<double>(q * (v.size() - 1) + 0.5, v.size() - 1));
  return v[i];
}

struct Summary {
  int ok = 0, failed = 0, wrong = 0, identical = 0, replayed = 0;
  double max_relative_error = 0;
  uint64_t bytes = 0;
  std::map<std::string, int> per_worker;
  std::vector<std::string> problems;  // first few
};

Summary Summarize(const PhaseResult& p) {
  Summary s;
  for (size_t i = 0; i < p.records.size(); ++i) {
    const RequestRecord& r = p.records[i];
    if (!r.ok) {
      ++s.failed;
      if (s.problems.size() < 5) {
        s.problems.push_back(absl::StrCat(
            "request ", r.id, " failed: ", r.completed < 0 ? "never completed" : r.error));
      }
      continue;
    }
    ++s.ok;
    s.bytes += r.bytes;
    ++s.per_worker[r.worker];
    if (r.attempts > 1) ++s.replayed;
    if (!r.checked) {
      ++s.wrong;
      if (s.problems.size() < 5) s.problems.push_back(absl::StrCat("request ", r.id, " unchecked"));
      continue;
    }
    if (r.check.identical) ++s.identical;
    s.max_relative_error = std::max(s.max_relative_error, r.check.relative_error);
    if (!r.check.problem.empty()) {
      ++s.wrong;
      if (s.problems.size() < 5) {
        s.problems.push_back(
            absl::StrCat("request ", r.id, " from ", r.worker, ": ", r.check.problem));
      }
    }
  }
  return s;
}

struct Failover {
  double kill_to_next = -1;    // kill to the next completion
  double max_gap_after = -1;   // longest gap between completions from the kill on
  double max_gap_before = -1;  // the same before the kill (the steady state)
  double median_gap_before = -1;
  double last_replayed_done = -1;  // kill to the completion of the last replayed request
  int completed_before_kill = 0;
};

Failover AnalyzeFailover(const PhaseResult& p) {
  Failover f;
  std::vector<double> times;
  for (const RequestRecord& r : p.records) {
    if (r.completed >= 0) times.push_back(r.completed);
  }
  std::sort(times.begin(), times.end());
  std::vector<double> gaps_before;
  double prev_after = p.kill_time;
  for (size_t i = 0; i < times.size(); ++i) {
    if (times[i] < p.kill_time) {
      ++f.completed_before_kill;
      if (i > 0) gaps_before.push_back(times[i] - times[i - 1]);
    } else {
      if (f.kill_to_next < 0) f.kill_to_next = times[i] - p.kill_time;
      f.max_gap_after = std::max(f.max_gap_after, times[i] - prev_after);
      prev_after = times[i];
    }
  }
  if (!gaps_before.empty()) {
    f.max_gap_before = *std::max_element(gaps_before.begin(), gaps_before.end());
    f.median_gap_before = Quantile(gaps_before, 0.5);
  }
  for (const RequestRecord& r : p.records) {
    if (r.ok && r.attempts > 1) {
      f.last_replayed_done = std::max(f.last_replayed_done, r.completed - p.kill_time);
    }
  }
  return f;
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  return std::isfinite(v) ? absl::StrFormat("%.6g", v) : std::string("null");
}

}  // namespace

// ---- the run ------------------------------------------------------------------------------------

absl::Status MakeWorkload(const Flags& f, Workload* w) {
  const Clock::time_point t = Clock::now();
  w->flags = &f;
  for (int i = 0; i < f.layers; ++i) {
    absl::StatusOr<client::LayerSpec> layer = MakeLayer(f, i);
    if (!layer.ok()) return layer.status();
    w->layers.push_back(*std::move(layer));
  }
  for (int i = 0; i < f.inputs; ++i) w->inputs.push_back(MakeInput(f, i));
  std::printf("[setup] %d layers (%.1f MiB of weights each) and %d inputs made in %.1f s\n",
              f.layers, w->layers[0].weight_bytes() / double(1 << 20), f.inputs,
              SecondsBetween(t, Clock::now()));
  std::fflush(stdout);
  return absl::OkStatus();
}

// The reference of every (layer, input) pair, computed by the first worker alone.
// Sets *seconds_each to the mean time of one reference request (sequential, nothing overlapped).
absl::Status ComputeReferences(const Flags& f, Workload* w, double* seconds_each) {
  const Clock::time_point t = Clock::now();
  absl::StatusOr<std::unique_ptr<client::Pool>> pool = OpenPool(f, *w, {f.targets[0]});
  if (!pool.ok()) {
    return absl::Status(pool.status().code(),
                        absl::StrCat("worker ", f.targets[0], ": ", pool.status().message()));
  }
  w->references.resize(w->layers.size());
  for (int l = 0; l < f.layers; ++l) {
    for (int i = 0; i < f.inputs; ++i) {
      client::AtpAttentionRequest request;
      request.layer_id = w->layers[l].id();
      request.x = w->inputs[i].view();
      request.rank = client::RankPolicy::Fixed(f.rank);
      client::CallOptions call;
      call.deadline = absl::Now() + absl::Seconds(f.timeout_s);
      absl::StatusOr<client::AttentionResult> y = (*pool)->AtpAttention(request, call);
      if (!y.ok()) {
        return absl::Status(y.status().code(), absl::StrCat("reference (layer ", l, ", input ", i,
                                                            "): ", y.status().message()));
      }
      const auto [zero, norm] = SquaredSums(y->y, y->y);
      if (!std::isfinite(zero) || !(norm > 0) || !std::isfinite(norm) || y->rank != f.rank) {
        return absl::InternalError(absl::StrCat("reference (layer ", l, ", input ", i,
                                                ") is unusable: squared norm ", norm, ", rank ",
                                                y->rank, " (want ", f.rank, ")"));
      }
      w->references[l].push_back(std::move(y->y));
    }
  }
  *seconds_each = SecondsBetween(t, Clock::now()) / (f.layers * f.inputs);
  std::printf("[reference] %d outputs from %s in %.1f s\n", f.layers * f.inputs,
              f.targets[0].c_str(), SecondsBetween(t, Clock::now()));
  if (f.corrupt_reference) {
    std::swap(w->references[0][0], w->references[0][1]);
    std::printf(
        "[reference] SELF-TEST: the references of inputs 0 and 1 of layer 0 are swapped; "
        "the check must fail\n");
  }
  std::fflush(stdout);
  return absl::OkStatus();
}

struct CountResult {
  int workers = 0;
  PhaseResult phase;
  Summary summary;
  double median_round_trip = 0;
  double median_compute = 0;
  // Requests over the wall time from the first submission to the last completion.
  double rate() const { return phase.requests / std::max(phase.elapsed, 1e-9); }
  // Completions after the first over the time from the first completion to the last: the rate
  // without the pipeline's fill latency (one request's round trip).
  double steady_rate() const {
    double first = INFINITY;
    for (const RequestRecord& r : phase.records) first = std::min(first, r.completed);
    return phase.requests > 1 && phase.elapsed > first
               ? (phase.requests - 1) / (phase.elapsed - first)
               : rate();
  }
  double gb_per_s() const { return summary.bytes / std::max(phase.elapsed, 1e-9) / 1e9; }
};

struct Report {
  std::vector<PhaseResult> warmups;
  std::vector<CountResult> scaling;
  std::vector<int> skipped_counts;
  std::optional<PhaseResult> failover;
  Summary failover_summary;
  Failover pause;
  std::string error;  // a worker count or the failover could not be set up
  // Over every phase, warm-ups included.
  int total = 0, completed = 0, failed = 0, wrong = 0, identical = 0;
  double max_relative_error = 0;
  std::vector<std::string> problems;
  bool pass = false;
};

// Step 2: the same requests through pools of the first n workers, for each n of --counts.
void RunScaling(const Flags& f, const Workload& w, Clock::time_point t0, int* next_request,
                Report* report) {
  for (int n : f.counts) {
    if (f.budget_s > 0 && SecondsBetween(t0, Clock::now()) > f.budget_s) {
      report->skipped_counts.push_back(n);
      continue;
    }
    absl::StatusOr<std::unique_ptr<client::Pool>> pool =
        OpenPool(f, w, std::vector<std::string>(f.targets.begin(), f.targets.begin() + n));
    if (!pool.ok()) {
      report->error = absl::StrCat(n, " workers: ", pool.status().ToString());
      return;
    }
    const int window = f.inflight_per_worker * n;
    // Warm-up: one window, so that every worker has run requests before the clock starts.
    report->warmups.push_back(RunRequests(f, w, **pool, *next_request, window, window, {}));
    *next_request += window;
    CountResult c;
    c.workers = n;
    c.phase = RunRequests(f, w, **pool, *next_request, f.requests, window, {});
    *next_request += f.requests;
    std::vector<double> rtt, compute;
    for (const RequestRecord& r : c.phase.records) {
      if (!r.ok) continue;
      rtt.push_back(r.round_trip);
      compute.push_back(r.compute);
    }
    c.summary = Summarize(c.phase);
    c.median_round_trip = Quantile(rtt, 0.5);
    c.median_compute = Quantile(compute, 0.5);
    std::printf(
        "[scaling] %d worker(s): %d requests in %.2f s = %.2f req/s, %.2f GB/s; %d ok, "
        "%d failed, %d wrong\n",
        n, f.requests, c.phase.elapsed, c.rate(), c.gb_per_s(), c.summary.ok, c.summary.failed,
        c.summary.wrong);
    std::fflush(stdout);
    report->scaling.push_back(std::move(c));
  }
}

// Step 3: every worker, one of them SIGKILLed part way.
void RunFailover(const Flags& f, const Workload& w, int* next_request, Report* report) {
  const int n = static_cast<int>(f.targets.size());
  if (n < 2 || f.pids.empty()) {
    std::printf("[failover] skipped: it needs at least 2 workers and their --pids\n");
    return;
  }
  absl::StatusOr<std::unique_ptr<client::Pool>> pool = OpenPool(f, w, f.targets);
  if (!pool.ok()) {
    report->error = absl::StrCat("failover pool: ", pool.status().ToString());
    return;
  }
  KillPlan plan;
  plan.enabled = true;
  plan.after_completions =
      std::max(1, static_cast<int>(std::lround(f.kill_after * f.kill_requests)));
  plan.pid = f.pids[f.kill_worker];
  plan.address = f.targets[f.kill_worker];
  report->failover =
      RunRequests(f, w, **pool, *next_request, f.kill_requests, f.inflight_per_worker * n, plan);
  *next_request += f.kill_requests;
  report->failover->workers = n;
  report->failover_summary = Summarize(*report->failover);
  if (report->failover->killed) report->pause = AnalyzeFailover(*report->failover);
  const Summary& s = report->failover_summary;
  std::printf(
      "[failover] %d workers, SIGKILL %s (pid %d) after %d of %d completions: %d ok, %d "
      "failed, %d wrong, %d replayed\n",
      n, plan.address.c_str(), static_cast<int>(plan.pid), plan.after_completions, f.kill_requests,
      s.ok, s.failed, s.wrong, s.replayed);
  std::fflush(stdout);
}

void Tally(Report* r) {
  auto add = [r](const Summary& s, int requests) {
    r->total += requests;
    r->completed += s.ok;
    r->failed += s.failed;
    r->wrong += s.wrong;
    r->identical += s.identical;
    r->max_relative_error = std::max(r->max_relative_error, s.max_relative_error);
    for (const std::string& p : s.problems) {
      if (r->problems.size() < 8) r->problems.push_back(p);
    }
  };
  for (const PhaseResult& p : r->warmups) add(Summarize(p), p.requests);
  for (const CountResult& c : r->scaling) add(c.summary, c.phase.requests);
  if (r->failover) add(r->failover_summary, r->failover->requests);
  const bool kill_sent = !r->failover || r->failover->killed;
  r->pass = r->error.empty() && r->completed == r->total && r->wrong == 0 && kill_sent &&
            !r->scaling.empty();
}

void PrintReport(const Flags& f, const Report& r) {
  std::printf("\n== pool scaling%s ==\n", f.note.empty() ? "" : (" (" + f.note + ")").c_str());
  std::printf("%-8s %-9s %-8s %-8s %-7s %-8s %-7s %-12s %-16s %s\n", "workers", "requests",
              "seconds", "req/s", "GB/s", "scaling", "steady", "rtt p50 (s)", "compute p50 (s)",
              "requests per worker");
  const double base = r.scaling.empty() ? 0 : r.scaling[0].rate();
  for (const CountResult& c : r.scaling) {
    std::vector<std::string> shares;
    for (const auto& [worker, count] : c.summary.per_worker) shares.push_back(absl::StrCat(count));
    std::printf("%-8d %-9d %-8.2f %-8.2f %-7.2f %-8s %-7.2f %-12.3f %-16.4f %s\n", c.workers,
                c.phase.requests, c.phase.elapsed, c.rate(), c.gb_per_s(),
                absl::StrFormat("%.2fx", c.rate() / std::max(base, 1e-12)).c_str(), c.steady_rate(),
                c.median_round_trip, c.median_compute, absl::StrJoin(shares, "/").c_str());
  }
  std::printf(
      "(req/s: requests / (first submission to last completion), after a warm-up of one window; "
      "scaling: req/s against the first row; steady: req/s from the first completion on; rtt: "
      "client round trip; compute: on the worker; GB/s: payload in + out)\n");
  if (!r.scaling.empty() && r.scaling[0].workers != 1) {
    std::printf("(scaling is against %d workers, the first count run)\n", r.scaling[0].workers);
  }
  if (!r.skipped_counts.empty()) {
    std::printf("skipped (past --budget=%.0f s): %s worker(s)\n", f.budget_s,
                absl::StrJoin(r.skipped_counts, ", ").c_str());
  }
  if (r.failover) {
    const PhaseResult& p = *r.failover;
    const Summary& s = r.failover_summary;
    std::printf("\n== failover ==\n");
    if (p.killed) {
      std::printf(
          "SIGKILL %s after %d completions (t=%.2f s); %d/%d requests completed, %d failed, %d "
          "wrong; %d replayed on other workers\n"
          "kill -> next completion %.3f s; longest gap between completions after the kill %.3f s "
          "(before it: longest %.3f s, median %.3f s); last replayed request done %s after the "
          "kill\n",
          p.killed_address.c_str(), r.pause.completed_before_kill, p.kill_time, s.ok, p.requests,
          s.failed, s.wrong, s.replayed, r.pause.kill_to_next, r.pause.max_gap_after,
          r.pause.max_gap_before, r.pause.median_gap_before,
          r.pause.last_replayed_done < 0
              ? "(none replayed)"
              : absl::StrFormat("%.3f s", r.pause.last_replayed_done).c_str());
    } else {
      std::printf("the kill was never sent (the run ended first)\n");
    }
  }
  std::printf(
      "\n== correctness ==\n%d requests in all phases: %d completed, %d failed or lost; each "
      "completed result checked against the single-worker reference of its (layer, input): %d "
      "bit-identical, %d wrong; max relative error %.3g (tolerance %.3g)\n",
      r.total, r.completed, r.failed, r.identical, r.wrong, r.max_relative_error, f.tolerance);
  for (const std::string& p : r.problems) std::printf("  %s\n", p.c_str());
  if (!r.error.empty()) std::printf("  error: %s\n", r.error.c_str());
  std::printf("%s\n",
              r.pass ? "PASS: every request completed with the right result" : "FAIL: see above");
  std::fflush(stdout);
}

void WriteJson(const Flags& f, const Report& r, double bytes_per_request) {
  std::string j = "{\n";
  absl::StrAppend(&j, "  \"note\": ", JsonString(f.note), ",\n");
  absl::StrAppend(&j, "  \"workers\": ", f.targets.size(), ", \"dtype\": \"",
                  f.dtype == client::DType::kBF16 ? "bf16" : "f32", "\", \"length\": ", f.length,
                  ", \"d_model\": ", f.d_model, ", \"heads\": ", f.heads,
                  ", \"kv_heads\": ", f.kv_heads, ", \"head_dim\": ", f.head_dim,
                  ", \"rank\": ", f.rank, ",\n");
  absl::StrAppend(
      &j, "  \"layers\": ", f.layers, ", \"inputs\": ", f.inputs, ", \"requests\": ", f.requests,
      ", \"inflight_per_worker\": ", f.inflight_per_worker,
      ", \"bytes_per_request\": ", JsonNumber(bytes_per_request), ",\n  \"scaling\": [");
  const double base = r.scaling.empty() ? 0 : r.scaling[0].rate();
  for (size_t i = 0; i < r.scaling.size(); ++i) {
    const CountResult& c = r.scaling[i];
    absl::StrAppend(&j, i ? ",\n" : "\n", "    {\"workers\": ", c.workers,
                    ", \"requests\": ", c.phase.requests,
                    ", \"seconds\": ", JsonNumber(c.phase.elapsed),
                    ", \"requests_per_s\": ", JsonNumber(c.rate()),
                    ", \"steady_requests_per_s\": ", JsonNumber(c.steady_rate()),
                    ", \"gb_per_s\": ", JsonNumber(c.gb_per_s()),
                    ", \"scaling\": ", JsonNumber(c.rate() / std::max(base, 1e-12)),
                    ", \"rtt_p50_s\": ", JsonNumber(c.median_round_trip),
                    ", \"compute_p50_s\": ", JsonNumber(c.median_compute),
                    ", \"ok\": ", c.summary.ok, ", \"wrong\": ", c.summary.wrong, "}");
  }
  absl::StrAppend(&j, "\n  ],\n  \"skipped_counts\": [", absl::StrJoin(r.skipped_counts, ", "),
                  "],\n");
  if (r.failover) {
    const PhaseResult& p = *r.failover;
    const Summary& s = r.failover_summary;
    absl::StrAppend(&j, "  \"failover\": {\"workers\": ", p.workers, ", \"requests\": ", p.requests,
                    ", \"killed\": ", p.killed ? "true" : "false",
                    ", \"killed_worker\": ", JsonString(p.killed_address),
                    ", \"kill_time_s\": ", JsonNumber(p.kill_time),
                    ", \"completed_before_kill\": ", r.pause.completed_before_kill,
                    ", \"ok\": ", s.ok, ", \"failed\": ", s.failed, ", \"wrong\": ", s.wrong,
                    ", \"replayed\": ", s.replayed,
                    ", \"kill_to_next_completion_s\": ", JsonNumber(r.pause.kill_to_next),
                    ", \"max_gap_after_kill_s\": ", JsonNumber(r.pause.max_gap_after),
                    ", \"max_gap_before_kill_s\": ", JsonNumber(r.pause.max_gap_before),
                    ", \"median_gap_before_kill_s\": ", JsonNumber(r.pause.median_gap_before),
                    ", \"last_replayed_done_s\": ", JsonNumber(r.pause.last_replayed_done), "},\n");
  }
  absl::StrAppend(
      &j, "  \"total_requests\": ", r.total, ", \"completed\": ", r.completed,
      ", \"failed\": ", r.failed, ", \"wrong\": ", r.wrong, ", \"bit_identical\": ", r.identical,
      ", \"max_relative_error\": ", JsonNumber(r.max_relative_error),
      ", \"tolerance\": ", JsonNumber(f.tolerance), ", \"error\": ", JsonString(r.error),
      ", \"pass\": ", r.pass ? "true" : "false", "\n}\n");
  std::ofstream out(f.json_path);
  out << j;
  if (!out) std::fprintf(stderr, "atp_pool_scaling: cannot write %s\n", f.json_path.c_str());
}

int Main(int argc, char** argv) {
  Flags f = ParseFlags(argc, argv);
  // Results are tens of MiB or more: keep freed memory in the heap rather than unmapping it (as
  // the worker does).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const Clock::time_point t0 = Clock::now();
  const double bytes_per_request =
      2.0 * static_cast<double>(f.length * f.d_model) * client::DTypeSize(f.dtype);
  std::printf(
      "pool_scaling: %zu worker(s) %s; ATP attention %s, L=%lld, d=%lld (%lld heads x %lld, "
      "%lld kv heads), r=%lld fixed; %d layers x %d inputs; %s requests per worker count, %d in "
      "flight per worker; %.1f MiB per request in+out\n",
      f.targets.size(), absl::StrJoin(f.targets, ",").c_str(),
      f.dtype == client::DType::kBF16 ? "bf16" : "f32", static_cast<long long>(f.length),
      static_cast<long long>(f.d_model), static_cast<long long>(f.heads),
      static_cast<long long>(f.head_dim), static_cast<long long>(f.kv_heads),
      static_cast<long long>(f.rank), f.layers, f.inputs,
      f.requests > 0 ? absl::StrCat(f.requests).c_str() : "auto", f.inflight_per_worker,
      bytes_per_request / (1 << 20));
  if (!f.note.empty()) std::printf("note: %s\n", f.note.c_str());
  std::fflush(stdout);

  Workload w;
  if (absl::Status s = MakeWorkload(f, &w); !s.ok()) {
    std::fprintf(stderr, "atp_pool_scaling: %s\n", s.ToString().c_str());
    return 2;
  }
  double seconds_each = 0;
  if (absl::Status s = ComputeReferences(f, &w, &seconds_each); !s.ok()) {
    std::fprintf(stderr, "atp_pool_scaling: %s\n", s.ToString().c_str());
    return 2;
  }
  if (f.requests == 0) {
    // One worker runs requests at least as fast as one after another: this many take at most
    // about --target-seconds on one worker. At least two windows of the largest pool, so that
    // filling and draining the pipeline stays a small part of each measurement.
    const double floor =
        std::max(16, 2 * f.inflight_per_worker * static_cast<int>(f.targets.size()));
    f.requests =
        static_cast<int>(std::clamp(std::floor(f.target_seconds / std::max(seconds_each, 1e-6)),
                                    floor, std::max(floor, 256.0)));
    std::printf(
        "[setup] --requests=0: %d requests per worker count (a reference request took "
        "%.3f s alone; --target-seconds=%.0f)\n",
        f.requests, seconds_each, f.target_seconds);
  }
  if (f.kill_requests == 0) f.kill_requests = f.requests;
  Report report;
  int next_request = 0;
  RunScaling(f, w, t0, &next_request, &report);
  if (report.error.empty()) RunFailover(f, w, &next_request, &report);
  Tally(&report);
  PrintReport(f, report);
  if (!f.json_path.empty()) WriteJson(f, report, bytes_per_request);
  return report.pass ? 0 : 1;
}

}  // namespace atp::bench

int main(int argc, char** argv) { return atp::bench::Main(argc, argv); }
