#include "remote_executor.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace atp::cli {
namespace {

client::TensorView ToClient(const kernels::TensorView& v) {
  return client::TensorView(static_cast<client::DType>(v.dtype), v.shape, v.data);
}

kernels::Tensor ToKernels(const client::Tensor& t) {
  kernels::Tensor out(static_cast<kernels::DType>(t.dtype()), t.shape());
  if (t.byte_size() > 0) std::memcpy(out.data(), t.data(), t.byte_size());
  return out;
}

client::RankPolicy ToClient(const kernels::RankPolicy& p) {
  client::RankPolicy out;
  switch (p.kind) {
    case kernels::RankPolicy::Kind::kFixed:
      out.kind = client::RankPolicy::Kind::kFixed;
      break;
    case kernels::RankPolicy::Kind::kFraction:
      out.kind = client::RankPolicy::Kind::kFraction;
      break;
    case kernels::RankPolicy::Kind::kEnergy:
      out.kind = client::RankPolicy::Kind::kEnergy;
      break;
  }
  out.value = p.value;
  out.max_rank = p.max_rank;
  return out;
}

// The layer as the SDK registers it, under an id derived from its content.
absl::StatusOr<client::LayerSpec> ToClientLayer(const kernels::LayerSpec& spec) {
  std::map<std::string, client::TensorView> weights;
  for (const auto& [name, t] : spec.weights) weights.emplace(name, ToClient(t.view()));
  absl::StatusOr<client::LayerSpec> layer;
  if (spec.kind == kernels::LayerSpec::Kind::kAttention) {
    const kernels::AttentionConfig& a = spec.attention;
    client::AttentionConfig c;
    c.d_model = a.d_model;
    c.num_heads = a.num_heads;
    c.num_kv_heads = a.num_kv_heads;
    c.head_dim = a.head_dim;
    c.scale = a.scale;
    c.key_scale = a.key_scale == kernels::KeyScale::kInvSqrtLen ? client::KeyScale::kInvSqrtLen
                                                                : client::KeyScale::kNone;
    c.default_rank = ToClient(a.default_rank);
    layer = client::LayerSpec::Attention("cli", c, weights);
  } else {
    auto bias = weights.find("bias");
    layer = client::LayerSpec::Linear(
        "cli", weights.at("weight"),
        bias == weights.end() ? std::nullopt : std::optional<client::TensorView>(bias->second),
        ToClient(spec.linear_default_rank));
  }
  if (!layer.ok()) return layer.status();
  return layer->Renamed(absl::StrCat("cli-", layer->digest().substr(0, 16)));
}

absl::Status NoSeed(uint64_t seed) {
  if (seed != kernels::AtpAttentionArgs().seed) {
    return absl::InvalidArgumentError(
        "--seed applies to local runs only: a worker uses its own (default) seed");
  }
  return absl::OkStatus();
}

class RemoteExecutor : public Executor {
 public:
  RemoteExecutor(RemoteOptions options, std::unique_ptr<client::Client> client,
                 std::function<void()> on_step)
      : options_(std::move(options)), client_(std::move(client)), on_step_(std::move(on_step)) {}

  std::string Describe() const override { return absl::StrCat("worker ", options_.target); }

  absl::StatusOr<kernels::AtpAttentionResult> AtpAttention(
      kernels::LayerSpec layer, const kernels::AtpAttentionArgs& args) override {
    if (auto s = NoSeed(args.seed); !s.ok()) return s;
    absl::StatusOr<std::string> id = Register(layer);
    if (!id.ok()) return id.status();
    client::AtpAttentionRequest request{.layer_id = *id, .x = ToClient(args.x)};
    if (args.rank) request.rank = ToClient(*args.rank);
    request.output_dtype = static_cast<client::DType>(args.output_dtype);
    absl::StatusOr<client::AttentionResult> r = Wait<client::AttentionResult>(
        [&](auto done) { client_->AtpAttentionAsync(request, std::move(done), Options()); });
    if (!r.ok()) return r.status();
    return kernels::AtpAttentionResult{ToKernels(r->y), r->rank, r->captured_energy};
  }

  absl::StatusOr<kernels::Tensor> ExactAttention(kernels::LayerSpec layer,
                                                 const kernels::ExactAttentionArgs& args) override {
    absl::StatusOr<std::string> id = Register(layer);
    if (!id.ok()) return id.status();
    client::ExactAttentionRequest request{
        .layer_id = *id, .x = ToClient(args.x), .causal = args.causal};
    request.output_dtype = static_cast<client::DType>(args.output_dtype);
    absl::StatusOr<client::AttentionResult> r = Wait<client::AttentionResult>(
        [&](auto done) { client_->ExactAttentionAsync(request, std::move(done), Options()); });
    if (!r.ok()) return r.status();
    return ToKernels(r->y);
  }

  absl::StatusOr<kernels::LowRankLinearResult> LowRankLinear(
      kernels::LayerSpec layer, const kernels::LowRankLinearArgs& args) override {
    if (auto s = NoSeed(args.seed); !s.ok()) return s;
    absl::StatusOr<std::string> id = Register(layer);
    if (!id.ok()) return id.status();
    client::LowRankLinearRequest request{.layer_id = *id, .weight = args.weight};
    if (args.factored_input) {
      request.input = client::FactoredTensorView{ToClient(args.u), ToClient(args.c)};
    } else {
      request.input = ToClient(args.x);
    }
    if (args.rank) request.rank = ToClient(*args.rank);
    request.factored_output = args.factored_output;
    request.output_dtype = static_cast<client::DType>(args.output_dtype);
    absl::StatusOr<client::LowRankLinearResult> r = Wait<client::LowRankLinearResult>(
        [&](auto done) { client_->LowRankLinearAsync(request, std::move(done), Options()); });
    if (!r.ok()) return r.status();
    kernels::LowRankLinearResult out;
    out.factored = r->factored;
    if (r->factored) {
      out.u = ToKernels(r->y_factored.u);
      out.c = ToKernels(r->y_factored.c);
    } else {
      out.y = ToKernels(r->y);
    }
    out.rank = r->rank;
    out.captured_energy = r->captured_energy;
    return out;
  }

  absl::StatusOr<kernels::PrincipalBases> Decompose(
      const kernels::PrincipalBasesArgs& args) override {
    if (auto s = NoSeed(args.seed); !s.ok()) return s;
    client::DecomposeRequest request{.x = ToClient(args.x), .rank = ToClient(args.rank)};
    switch (args.method) {
      case kernels::DecomposeMethod::kAuto:
        request.method = client::DecomposeMethod::kAuto;
        break;
      case kernels::DecomposeMethod::kExact:
        request.method = client::DecomposeMethod::kExact;
        break;
      case kernels::DecomposeMethod::kRandomized:
        request.method = client::DecomposeMethod::kRandomized;
        break;
    }
    request.output_dtype = static_cast<client::DType>(args.output_dtype);
    absl::StatusOr<client::DecomposeResult> r = Wait<client::DecomposeResult>(
        [&](auto done) { client_->DecomposeAsync(request, std::move(done), Options()); });
    if (!r.ok()) return r.status();
    kernels::PrincipalBases out;
    out.rank = r->rank;
    out.captured_energy = r->captured_energy;
    out.u = ToKernels(r->u);
    out.s = ToKernels(r->s);
    out.vt = ToKernels(r->vt);
    return out;
  }

 private:
  client::CallOptions Options() const {
    client::CallOptions o;
    o.deadline = deadline_;
    return o;
  }

  absl::StatusOr<std::string> Register(const kernels::LayerSpec& layer) {
    absl::StatusOr<client::LayerSpec> spec = ToClientLayer(layer);
    if (!spec.ok()) return spec.status();
    absl::Status s = Wait<absl::Status>(
        [&](auto done) { client_->RegisterLayerAsync(*spec, std::move(done), Options()); });
    if (!s.ok()) return DescribeRemoteError(s, options_.target);
    return spec->id();
  }

  // Runs an asynchronous call and waits for it, calling on_step about ten times a second (the
  // progress line) meanwhile.
  template <typename T>
  using WaitResult =
      std::conditional_t<std::is_same_v<T, absl::Status>, absl::Status, absl::StatusOr<T>>;

  template <typename T, typename Start>
  WaitResult<T> Wait(Start start) {
    using Result = WaitResult<T>;
    Result result = absl::UnknownError("not run");
    absl::Notification done;
    start([&](Result r) {
      result = std::move(r);
      done.Notify();
    });
    while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {  // bounded: deadline_
      if (on_step_) on_step_();
    }
    if constexpr (std::is_same_v<Result, absl::Status>) {
      return DescribeRemoteError(result, options_.target);
    } else {
      if (!result.ok()) return Result(DescribeRemoteError(result.status(), options_.target));
      return result;
    }
  }

  const RemoteOptions options_;
  std::unique_ptr<client::Client> client_;
  std::function<void()> on_step_;
  const absl::Time deadline_ = absl::Now() + options_.timeout;
};

}  // namespace

absl::StatusOr<std::unique_ptr<client::Client>> ConnectToWorker(const RemoteOptions& options) {
  client::ClientOptions copt;
  copt.tls.ca_file = options.tls_ca;
  copt.tls.server_name_override = options.tls_server_name;
  copt.bearer_token_file = options.token_file;
  copt.default_timeout = options.timeout;
  copt.watch_health = false;  // one-shot commands
  return client::Client::Create(options.target, copt);
}

absl::Status DescribeRemoteError(const absl::Status& status, const std::string& target) {
  if (status.code() != absl::StatusCode::kUnavailable) return status;
  std::string message(status.message());
  const std::string prefix = absl::StrCat("worker ", target, ": ");
  if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
  if (message.rfind("cannot reach", 0) == 0) return status;
  return absl::UnavailableError(absl::StrCat("cannot reach worker ", target, ": ", message));
}

absl::StatusOr<std::unique_ptr<Executor>> CreateRemoteExecutor(const RemoteOptions& options,
                                                               std::function<void()> on_step) {
  absl::StatusOr<std::unique_ptr<client::Client>> c = ConnectToWorker(options);
  if (!c.ok()) return c.status();
  return std::make_unique<RemoteExecutor>(options, *std::move(c), std::move(on_step));
}

}  // namespace atp::cli
