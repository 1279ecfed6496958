#include "encoder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace atp::examples {
namespace {

using client::Tensor;
using client::TensorView;

std::vector<float> Normal(int64_t n, std::mt19937_64& rng, float stddev) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

Tensor F32(client::Shape shape, const std::vector<float>& v) {
  return Tensor::FromF32(std::move(shape), v);
}

void LayerNorm(const float* x, int64_t rows, int64_t d, const std::vector<float>& gamma,
               const std::vector<float>& beta, float* out) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* r = x + i * d;
    double mean = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mean += r[j];
    mean /= d;
    for (int64_t j = 0; j < d; ++j) var += (r[j] - mean) * (r[j] - mean);
    var /= d;
    const float inv = static_cast<float>(1.0 / std::sqrt(var + 1e-5));
    for (int64_t j = 0; j < d; ++j) {
      out[i * d + j] = (r[j] - static_cast<float>(mean)) * inv * gamma[j] + beta[j];
    }
  }
}

void Gelu(float* x, int64_t n) {
  constexpr float kC = 0.7978845608f;  // sqrt(2/pi)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kC * (v + 0.044715f * v * v * v)));
  }
}

double Ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// The sequences' embeddings: token embedding plus a small sinusoidal position code.
std::vector<std::vector<float>> Embed(const EncoderWeights& w,
                                      const std::vector<std::vector<int32_t>>& tokens) {
  const int64_t d = w.config.d_model;
  std::vector<std::vector<float>> xs;
  for (const auto& seq : tokens) {
    std::vector<float> x(seq.size() * d);
    for (size_t i = 0; i < seq.size(); ++i) {
      for (int64_t j = 0; j < d; ++j) {
        const double freq = std::pow(10000.0, -static_cast<double>(j / 2 * 2) / d);
        const double angle = static_cast<double>(i) * freq;
        const float pos =
            static_cast<float>(0.1 * ((j % 2 == 0) ? std::sin(angle) : std::cos(angle)));
        x[i * d + j] = w.embedding[static_cast<size_t>(seq[i]) * d + j] + pos;
      }
    }
    xs.push_back(std::move(x));
  }
  return xs;
}

std::vector<TensorView> Views(const std::vector<std::vector<float>>& xs, int64_t width) {
  std::vector<TensorView> views;
  for (const auto& x : xs) {
    views.push_back(TensorView::F32(x.data(), {static_cast<int64_t>(x.size()) / width, width}));
  }
  return views;
}

void AddInto(std::vector<float>& x, const Tensor& y) {
  const std::vector<float> v = y.ToF32();
  for (size_t i = 0; i < x.size(); ++i) x[i] += v[i];
}

// ---- offloaded ---------------------------------------------------------------------------------

class Remote : public LayerOps {
 public:
  Remote(client::Offloader* offloader, std::function<void()> on_done, std::function<void()> on_wait)
      : offloader_(offloader), on_done_(std::move(on_done)), on_wait_(std::move(on_wait)) {}

  absl::StatusOr<std::vector<Result>> Attention(const client::LayerSpec& layer,
                                                const std::vector<TensorView>& x) override {
    return Run<client::AttentionResult>(x.size(), [&](size_t i, auto done) {
      offloader_->AtpAttentionAsync({.layer_id = layer.id(), .x = x[i]}, std::move(done));
    });
  }

  absl::StatusOr<std::vector<Result>> Linear(const client::LayerSpec& layer,
                                             const std::vector<TensorView>& x,
                                             bool factored) override {
    return Run<client::LowRankLinearResult>(x.size(), [&](size_t i, auto done) {
      offloader_->LowRankLinearAsync(
          {.layer_id = layer.id(), .input = x[i], .factored_output = factored}, std::move(done));
    });
  }

 private:
  template <typename R, typename Start>
  absl::StatusOr<std::vector<Result>> Run(size_t n, Start start) {
    absl::Mutex mu;
    size_t left = n;
    std::vector<absl::StatusOr<R>> got;
    for (size_t i = 0; i < n; ++i) got.emplace_back(absl::UnknownError("not run"));
    for (size_t i = 0; i < n; ++i) {
      start(i, [&, i](absl::StatusOr<R> r) {
        absl::MutexLock lock(&mu);
        got[i] = std::move(r);
        --left;
        if (on_done_) on_done_();
      });
    }
    for (;;) {  // bounded by the calls' deadlines
      absl::MutexLock lock(&mu);
      auto all = [&left]() { return left == 0; };
      if (mu.AwaitWithTimeout(absl::Condition(&all), absl::Milliseconds(100))) break;
      mu.Unlock();
      if (on_wait_) on_wait_();
      mu.Lock();
    }
    std::vector<Result> out;
    for (auto& r : got) {
      if (!r.ok()) return r.status();
      Result res;
      if constexpr (std::is_same_v<R, client::AttentionResult>) {
        res.y = std::move(r->y);
      } else {
        if (r->factored) {
          res.yf = std::move(r->y_factored);
        } else {
          res.y = std::move(r->y);
        }
      }
      res.rank = r->rank;
      res.bytes_sent = r->info.bytes_sent;
      res.bytes_received = r->info.bytes_received;
      res.worker_compute_ms = absl::ToDoubleMilliseconds(r->info.compute_time);
      out.push_back(std::move(res));
    }
    return out;
  }

  client::Offloader* offloader_;
  std::function<void()> on_done_;
  std::function<void()> on_wait_;
};

// ---- in-process --------------------------------------------------------------------------------

kernels::RankPolicy ToKernels(const client::RankPolicy& p) {
  switch (p.kind) {
    case client::RankPolicy::Kind::kFixed:
      return kernels::RankPolicy::Fixed(static_cast<int64_t>(p.value), p.max_rank);
    case client::RankPolicy::Kind::kFraction:
      return kernels::RankPolicy::Fraction(p.value, p.max_rank);
    case client::RankPolicy::Kind::kEnergy:
      break;
  }
  return kernels::RankPolicy::Energy(p.value, p.max_rank);
}

kernels::TensorView ToKernels(const TensorView& v) {
  return kernels::TensorView{static_cast<kernels::DType>(v.dtype), v.shape, v.data};
}

Tensor ToClient(const kernels::Tensor& t) {
  Tensor out(static_cast<client::DType>(t.dtype()), t.shape());
  std::memcpy(out.data(), t.data(), t.byte_size());
  return out;
}

kernels::LayerSpec ToKernels(const client::LayerSpec& spec) {
  kernels::LayerSpec out;
  for (const auto& [name, t] : spec.weights()) {
    out.weights.emplace(name, kernels::Tensor::CopyOf(ToKernels(t.view())));
  }
  if (spec.kind() == client::LayerSpec::Kind::kAttention) {
    const client::AttentionConfig& c = spec.attention();
    out.kind = kernels::LayerSpec::Kind::kAttention;
    out.attention.d_model = c.d_model;
    out.attention.num_heads = c.num_heads;
    out.attention.num_kv_heads = c.num_kv_heads;
    out.attention.head_dim = c.head_dim;
    out.attention.scale = c.scale;
    out.attention.key_scale = c.key_scale == client::KeyScale::kInvSqrtLen
                                  ? kernels::KeyScale::kInvSqrtLen
                                  : kernels::KeyScale::kNone;
    if (c.default_rank) out.attention.default_rank = ToKernels(*c.default_rank);
  } else {
    out.kind = kernels::LayerSpec::Kind::kLinear;
    if (spec.linear_default_rank())
      out.linear_default_rank = ToKernels(*spec.linear_default_rank());
  }
  return out;
}

// `dense`: exact attention and full-rank (= dense, up to rounding) linear maps instead.
class Local : public LayerOps {
 public:
  Local(kernels::Backend* backend, bool dense) : backend_(backend), dense_(dense) {}

  absl::Status Load(const client::LayerSpec& spec) {
    absl::StatusOr<std::unique_ptr<kernels::LayerHandle>> h = backend_->LoadLayer(ToKernels(spec));
    if (!h.ok()) return h.status();
    layers_[spec.id()] = *std::move(h);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Result>> Attention(const client::LayerSpec& layer,
                                                const std::vector<TensorView>& x) override {
    std::vector<Result> out;
    for (const TensorView& v : x) {
      Result res;
      if (dense_) {
        kernels::ExactAttentionArgs args;
        args.x = ToKernels(v);
        auto r = backend_->ExactAttention(*layers_.at(layer.id()), args, {});
        if (!r.ok()) return r.status();
        res.y = ToClient(*r);
      } else {
        kernels::AtpAttentionArgs args;
        args.x = ToKernels(v);
        auto r = backend_->AtpAttention(*layers_.at(layer.id()), args, {});
        if (!r.ok()) return r.status();
        res.y = ToClient(r->y);
        res.rank = r->rank;
      }
      out.push_back(std::move(res));
    }
    return out;
  }

  absl::StatusOr<std::vector<Result>> Linear(const client::LayerSpec& layer,
                                             const std::vector<TensorView>& x,
                                             bool factored) override {
    std::vector<Result> out;
    for (const TensorView& v : x) {
      kernels::LowRankLinearArgs args;
      args.x = ToKernels(v);
      args.factored_output = factored;
      if (dense_) args.rank = kernels::RankPolicy::Fixed(std::min(v.dim(0), v.dim(1)));
      auto r = backend_->LowRankLinear(*layers_.at(layer.id()), args, {});
      if (!r.ok()) return r.status();
      Result res;
      if (r->factored) {
        res.yf.u = ToClient(r->u);
        res.yf.c = ToClient(r->c);
      } else {
        res.y = ToClient(r->y);
      }
      res.rank = r->rank;
      out.push_back(std::move(res));
    }
    return out;
  }

 private:
  kernels::Backend* backend_;
  const bool dense_;
  std::map<std::string, std::unique_ptr<kernels::LayerHandle>> layers_;
};

}  // namespace

absl::StatusOr<EncoderWeights> GenerateWeights(const EncoderConfig& c) {
  if (c.d_model % c.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("d_model ", c.d_model, " is not a multiple of heads ", c.heads));
  }
  std::mt19937_64 rng(c.seed);
  EncoderWeights w;
  w.config = c;
  const int64_t d = c.d_model, dh = d / c.heads;
  // A low-rank embedding table (a few dozen directions plus noise).
  constexpr int64_t kEmbeddingRank = 24;
  const std::vector<float> a = Normal(c.vocab * kEmbeddingRank, rng, 1.0f);
  const std::vector<float> b = Normal(kEmbeddingRank * d, rng, 1.0f / std::sqrt(kEmbeddingRank));
  w.embedding = Normal(c.vocab * d, rng, 0.05f);
  for (int64_t t = 0; t < c.vocab; ++t) {
    for (int64_t k = 0; k < kEmbeddingRank; ++k) {
      const float s = a[t * kEmbeddingRank + k] / (1.0f + 0.2f * k);
      for (int64_t j = 0; j < d; ++j) w.embedding[t * d + j] += s * b[k * d + j];
    }
  }
  auto ln = [&](std::vector<float>* gamma, std::vector<float>* beta) {
    *gamma = Normal(d, rng, 0.05f);
    for (float& g : *gamma) g += 1.0f;
    *beta = Normal(d, rng, 0.02f);
  };
  const float sd = 1.0f / std::sqrt(static_cast<float>(d));
  const float sff = 0.5f / std::sqrt(static_cast<float>(c.d_ff));
  for (int64_t i = 0; i < c.blocks; ++i) {
    std::vector<float> ln1_gamma, ln1_beta, ln2_gamma, ln2_beta;
    ln(&ln1_gamma, &ln1_beta);
    ln(&ln2_gamma, &ln2_beta);
    std::map<std::string, Tensor> attn;
    const int64_t q = c.heads * dh, kv = c.kv_heads * dh;
    attn.emplace("q_proj.weight", F32({q, d}, Normal(q * d, rng, sd)));
    attn.emplace("k_proj.weight", F32({kv, d}, Normal(kv * d, rng, sd)));
    attn.emplace("v_proj.weight", F32({kv, d}, Normal(kv * d, rng, sd)));
    attn.emplace("o_proj.weight", F32({d, q}, Normal(d * q, rng, 0.5f * sd)));
    attn.emplace("q_proj.bias", F32({q}, Normal(q, rng, 0.02f)));
    attn.emplace("k_proj.bias", F32({kv}, Normal(kv, rng, 0.02f)));
    attn.emplace("v_proj.bias", F32({kv}, Normal(kv, rng, 0.02f)));
    attn.emplace("o_proj.bias", F32({d}, Normal(d, rng, 0.02f)));
    client::AttentionConfig ac{.d_model = d,
                               .num_heads = c.heads,
                               .num_kv_heads = c.kv_heads,
                               .head_dim = dh,
                               .default_rank = c.attention_rank};
    auto attention =
        client::LayerSpec::Attention(absl::StrCat("encoder.", i, ".attn"), ac, std::move(attn));
    if (!attention.ok()) return attention.status();
    auto up = client::LayerSpec::Linear(absl::StrCat("encoder.", i, ".ffn_up"),
                                        F32({c.d_ff, d}, Normal(c.d_ff * d, rng, sd)),
                                        F32({c.d_ff}, Normal(c.d_ff, rng, 0.02f)), c.ffn_up_rank);
    if (!up.ok()) return up.status();
    auto down = client::LayerSpec::Linear(absl::StrCat("encoder.", i, ".ffn_down"),
                                          F32({d, c.d_ff}, Normal(d * c.d_ff, rng, sff)),
                                          F32({d}, Normal(d, rng, 0.02f)), c.ffn_down_rank);
    if (!down.ok()) return down.status();
    w.blocks.push_back({std::move(ln1_gamma), std::move(ln1_beta), std::move(ln2_gamma),
                        std::move(ln2_beta), *std::move(attention), *std::move(up),
                        *std::move(down)});
  }
  ln(&w.final_gamma, &w.final_beta);
  return w;
}

std::vector<std::vector<int32_t>> GenerateTokens(const EncoderConfig& c, int64_t batch,
                                                 int64_t length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.vocab - 1));
  std::vector<std::vector<int32_t>> out;
  for (int64_t s = 0; s < batch; ++s) {
    // A sequence about a few topics: its tokens come from a small set.
    std::vector<int32_t> topic(12);
    for (int32_t& t : topic) t = token(rng);
    std::uniform_int_distribution<size_t> pick(0, topic.size() - 1);
    std::vector<int32_t> seq(static_cast<size_t>(length));
    for (int32_t& t : seq) t = topic[pick(rng)];
    out.push_back(std::move(seq));
  }
  return out;
}

std::unique_ptr<LayerOps> RemoteOps(client::Offloader* offloader,
                                    std::function<void()> on_request_done,
                                    std::function<void()> on_wait) {
  return std::make_unique<Remote>(offloader, std::move(on_request_done), std::move(on_wait));
}

absl::StatusOr<std::unique_ptr<LayerOps>> LocalOps(kernels::Backend* backend,
                                                   const EncoderWeights& weights, bool dense) {
  auto ops = std::make_unique<Local>(backend, dense);
  for (const auto& b : weights.blocks) {
    for (const client::LayerSpec* spec : {&b.attention, &b.ffn_up, &b.ffn_down}) {
      if (auto s = ops->Load(*spec); !s.ok()) return s;
    }
  }
  return ops;
}

absl::StatusOr<std::vector<Tensor>> RunEncoder(const EncoderWeights& w,
                                               const std::vector<std::vector<int32_t>>& tokens,
                                               LayerOps& ops, std::vector<LayerStats>* stats,
                                               const LayerObserver& observe) {
  size_t layer_index = 0;
  auto seen = [&](const std::vector<std::vector<float>>& outputs) {
    if (observe) observe(layer_index, outputs);
    ++layer_index;
  };
  auto dense = [](const std::vector<LayerOps::Result>& rs) {
    std::vector<std::vector<float>> out;
    for (const auto& r : rs) out.push_back(r.y.ToF32());
    return out;
  };
  const int64_t d = w.config.d_model, dff = w.config.d_ff;
  std::vector<std::vector<float>> xs = Embed(w, tokens);
  std::vector<std::vector<float>> h(xs.size());
  auto record = [&](const client::LayerSpec& layer, std::string op, double ms,
                    const std::vector<LayerOps::Result>& rs, int64_t in_width, int64_t out_width) {
    LayerStats s{layer.id(), std::move(op), ms};
    for (size_t i = 0; i < rs.size(); ++i) {
      const int64_t rows = static_cast<int64_t>(xs[i].size()) / d;
      s.bytes_sent += rs[i].bytes_sent;
      s.bytes_received += rs[i].bytes_received;
      s.dense_bytes += static_cast<uint64_t>(rows * (in_width + out_width)) * sizeof(float);
      s.worker_compute_ms += rs[i].worker_compute_ms;
      s.ranks.push_back(rs[i].rank);
    }
    if (stats != nullptr) stats->push_back(std::move(s));
  };
  for (const EncoderWeights::Block& b : w.blocks) {
    // Attention with a pre-LayerNorm and a residual.
    for (size_t s = 0; s < xs.size(); ++s) {
      h[s].resize(xs[s].size());
      LayerNorm(xs[s].data(), xs[s].size() / d, d, b.ln1_gamma, b.ln1_beta, h[s].data());
    }
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<LayerOps::Result>> attn = ops.Attention(b.attention, Views(h, d));
    if (!attn.ok()) return attn.status();
    record(b.attention, "atp_attention", Ms(t0), *attn, d, d);
    if (observe) seen(dense(*attn));
    for (size_t s = 0; s < xs.size(); ++s) AddInto(xs[s], (*attn)[s].y);

    // FFN: the up-projection comes back factored; the host expands it for the GELU.
    for (size_t s = 0; s < xs.size(); ++s) {
      LayerNorm(xs[s].data(), xs[s].size() / d, d, b.ln2_gamma, b.ln2_beta, h[s].data());
    }
    t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<LayerOps::Result>> up = ops.Linear(b.ffn_up, Views(h, d), true);
    if (!up.ok()) return up.status();
    record(b.ffn_up, "lowrank_linear, factored out", Ms(t0), *up, d, dff);
    std::vector<std::vector<float>> g(xs.size());
    for (size_t s = 0; s < xs.size(); ++s) {
      g[s] = (*up)[s].yf.ToDense().ToF32();
    }
    if (observe) seen(g);
    for (auto& v : g) Gelu(v.data(), static_cast<int64_t>(v.size()));
    t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<LayerOps::Result>> down =
        ops.Linear(b.ffn_down, Views(g, dff), false);
    if (!down.ok()) return down.status();
    record(b.ffn_down, "lowrank_linear", Ms(t0), *down, dff, d);
    if (observe) seen(dense(*down));
    for (size_t s = 0; s < xs.size(); ++s) AddInto(xs[s], (*down)[s].y);
  }
  std::vector<Tensor> out;
  for (auto& x : xs) {
    const int64_t rows = static_cast<int64_t>(x.size()) / d;
    Tensor y(client::DType::kF32, {rows, d});
    LayerNorm(x.data(), rows, d, w.final_gamma, w.final_beta, y.data_as<float>());
    out.push_back(std::move(y));
  }
  return out;
}

absl::StatusOr<std::vector<Tensor>> RunDenseEncoder(
    kernels::Backend* backend, const EncoderWeights& w,
    const std::vector<std::vector<int32_t>>& tokens) {
  absl::StatusOr<std::unique_ptr<LayerOps>> ops = LocalOps(backend, w, /*dense=*/true);
  if (!ops.ok()) return ops.status();
  return RunEncoder(w, tokens, **ops, nullptr);
}

double RelativeError(const std::vector<std::vector<float>>& a,
                     const std::vector<std::vector<float>>& b) {
  double diff = 0, ref = 0;
  for (size_t s = 0; s < std::min(a.size(), b.size()); ++s) {
    for (size_t i = 0; i < std::min(a[s].size(), b[s].size()); ++i) {
      const double x = a[s][i], y = b[s][i];
      diff += (x - y) * (x - y);
      ref += y * y;
    }
  }
  return ref == 0 ? std::sqrt(diff) : std::sqrt(diff / ref);
}

double RelativeError(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double diff = 0, ref = 0;
  for (size_t s = 0; s < std::min(a.size(), b.size()); ++s) {
    const std::vector<float> x = a[s].ToF32(), y = b[s].ToF32();
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      diff += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
      ref += static_cast<double>(y[i]) * y[i];
    }
  }
  return ref == 0 ? std::sqrt(diff) : std::sqrt(diff / ref);
}

}  // namespace atp::examples
