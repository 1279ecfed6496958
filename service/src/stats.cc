#include "stats.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "atp/wire/status.h"

namespace atp::service {
namespace {

const prometheus::Histogram::BucketBoundaries& SecondsBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
  return *buckets;
}

}  // namespace

absl::string_view OpName(Op op) {
  switch (op) {
    case Op::kAtpAttention:
      return "atp_attention";
    case Op::kExactAttention:
      return "exact_attention";
    case Op::kLowRankLinear:
      return "lowrank_linear";
    case Op::kDecompose:
      return "decompose";
    case Op::kRegisterLayer:
      return "register_layer";
  }
  return "unknown";
}

Stats::Stats() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& requests = prometheus::BuildCounter()
                       .Name("atp_requests_total")
                       .Help("Requests finished, by operation (compute requests and layer uploads)")
                       .Register(*registry_);
  errors_family_ = &prometheus::BuildCounter()
                        .Name("atp_request_errors_total")
                        .Help(
                            "Requests that finished with a status other than OK, by operation "
                            "and google.rpc.Code name")
                        .Register(*registry_);
  rpc_family_ = &prometheus::BuildCounter()
                     .Name("atp_rpcs_total")
                     .Help("RPCs finished, by method and final gRPC status code name")
                     .Register(*registry_);
  auto& bytes_in = prometheus::BuildCounter()
                       .Name("atp_received_bytes_total")
                       .Help("Tensor payload bytes received, by operation")
                       .Register(*registry_);
  auto& bytes_out = prometheus::BuildCounter()
                        .Name("atp_sent_bytes_total")
                        .Help("Tensor payload bytes sent, by operation")
                        .Register(*registry_);
  auto& receive = prometheus::BuildHistogram()
                      .Name("atp_receive_seconds")
                      .Help("Transfer time from a request's header to its last input byte")
                      .Register(*registry_);
  auto& queue = prometheus::BuildHistogram()
                    .Name("atp_queue_seconds")
                    .Help("Time a request waited for the executor")
                    .Register(*registry_);
  auto& compute = prometheus::BuildHistogram()
                      .Name("atp_compute_seconds")
                      .Help("Compute time on the backend")
                      .Register(*registry_);
  auto& send = prometheus::BuildHistogram()
                   .Name("atp_send_seconds")
                   .Help("Transfer time of a response, from its header to its last output byte")
                   .Register(*registry_);
  for (int i = 0; i < kNumOps; ++i) {
    const prometheus::Labels labels{{"op", std::string(OpName(static_cast<Op>(i)))}};
    requests_[i] = &requests.Add(labels);
    bytes_in_[i] = &bytes_in.Add(labels);
    bytes_out_[i] = &bytes_out.Add(labels);
    receive_hist_[i] = &receive.Add(labels, SecondsBuckets());
    queue_hist_[i] = &queue.Add(labels, SecondsBuckets());
    compute_hist_[i] = &compute.Add(labels, SecondsBuckets());
    send_hist_[i] = &send.Add(labels, SecondsBuckets());
  }
  auto gauge = [this](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
  };
  queue_depth_gauge_ = gauge("atp_queue_depth", "Requests waiting for the executor");
  inflight_gauge_ = gauge("atp_inflight_requests", "Requests admitted and not yet answered");
  inflight_bytes_gauge_ =
      gauge("atp_inflight_bytes", "Payload memory reserved by requests in flight");
  layers_gauge_ = gauge("atp_resident_layers", "Layers resident in the backend");
  layer_bytes_gauge_ =
      gauge("atp_resident_layer_bytes", "Bytes of backend memory held by resident layers");
  ready_gauge_ = gauge("atp_ready", "1 while the worker is ready (readiness SERVING), else 0");
  start_time_gauge_ =
      gauge("process_start_time_seconds", "Start time of the worker since the Unix epoch");
  start_time_gauge_->Set(absl::ToDoubleSeconds(start_ - absl::UnixEpoch()));
  info_family_ = &prometheus::BuildGauge()
                      .Name("atp_worker_info")
                      .Help("Constant 1, labelled with the version, backend and device")
                      .Register(*registry_);
}

Stats::~Stats() = default;

void Stats::Record(const RequestRecord& r) {
  const int i = static_cast<int>(r.op);
  {
    absl::MutexLock lock(&mu_);
    OpTotals& t = totals_[i];
    ++t.requests;
    t.bytes_in += r.bytes_in;
    t.bytes_out += r.bytes_out;
    t.receive += r.receive_seconds;
    t.queue += r.queue_seconds;
    t.compute += r.compute_seconds;
    if (r.code != absl::StatusCode::kOk) {
      ++t.errors;
      ++errors_by_code_[wire::StatusCodeName(r.code)];
    }
  }
  requests_[i]->Increment();
  bytes_in_[i]->Increment(static_cast<double>(r.bytes_in));
  bytes_out_[i]->Increment(static_cast<double>(r.bytes_out));
  receive_hist_[i]->Observe(r.receive_seconds);
  if (r.code == absl::StatusCode::kOk || r.compute_seconds > 0) {
    queue_hist_[i]->Observe(r.queue_seconds);
    compute_hist_[i]->Observe(r.compute_seconds);
  }
  if (r.bytes_out > 0) send_hist_[i]->Observe(r.send_seconds);
  if (r.code != absl::StatusCode::kOk) {
    errors_family_->Add({{"op", std::string(OpName(r.op))}, {"code", wire::StatusCodeName(r.code)}})
        .Increment();
  }
}

void Stats::RecordError(absl::StatusCode code) {
  if (code == absl::StatusCode::kOk) return;
  absl::MutexLock lock(&mu_);
  ++errors_by_code_[wire::StatusCodeName(code)];
}

void Stats::RecordRpc(absl::string_view method, absl::StatusCode code) {
  rpc_family_->Add({{"method", std::string(method)}, {"code", wire::StatusCodeName(code)}})
      .Increment();
}

void Stats::SetQueueDepth(int depth) {
  {
    absl::MutexLock lock(&mu_);
    queue_depth_ = depth;
  }
  queue_depth_gauge_->Set(depth);
}

void Stats::SetInflight(int requests, uint64_t bytes) {
  {
    absl::MutexLock lock(&mu_);
    inflight_ = requests;
  }
  inflight_gauge_->Set(requests);
  inflight_bytes_gauge_->Set(static_cast<double>(bytes));
}

void Stats::SetResident(size_t layers, uint64_t bytes) {
  {
    absl::MutexLock lock(&mu_);
    layers_ = layers;
    layer_bytes_ = bytes;
  }
  layers_gauge_->Set(static_cast<double>(layers));
  layer_bytes_gauge_->Set(static_cast<double>(bytes));
}

void Stats::SetReady(bool ready) { ready_gauge_->Set(ready ? 1 : 0); }

void Stats::SetInfo(absl::string_view version, absl::string_view backend,
                    absl::string_view device) {
  info_family_
      ->Add({{"version", std::string(version)},
             {"backend", std::string(backend)},
             {"device", std::string(device)}})
      .Set(1);
}

StatsSnapshot Stats::Snapshot() const {
  StatsSnapshot s;
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < kNumOps; ++i) {
    const OpTotals& t = totals_[i];
    s.ops.push_back({std::string(OpName(static_cast<Op>(i))), t.requests, t.errors, t.bytes_in,
                     t.bytes_out, t.receive, t.queue, t.compute});
  }
  s.queue_depth = queue_depth_;
  s.inflight_requests = inflight_;
  s.resident_layers = layers_;
  s.resident_layer_bytes = layer_bytes_;
  s.uptime_seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  s.errors_by_code = errors_by_code_;
  return s;
}

std::string Stats::PrometheusText() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace atp::service
