// The typed operations of Offloader: each request becomes an OpCall (wire header + input views),
// each outcome a typed result. Shared by Client and Pool.
#include "atp/client/offloader.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "op_call.h"
#include "wire_convert.h"

namespace atp::client {
namespace {

using internal::OpCall;
using internal::OpOutcome;

std::unique_ptr<OpCall> NewCall(absl::Time deadline, bool wait_for_ready) {
  auto call = std::make_unique<OpCall>();
  call->deadline = deadline;
  call->wait_for_ready = wait_for_ready;
  call->submitted = absl::Now();
  return call;
}

absl::Status CheckInput(const TensorView& x, absl::string_view what) {
  return CheckTensorView(x, 2, what);
}

// Builders: request → OpCall (without finish), or the error that refuses it.
absl::StatusOr<std::unique_ptr<OpCall>> Build(const AtpAttentionRequest& r, absl::Time deadline,
                                              bool wait) {
  if (auto s = CheckInput(r.x, "x"); !s.ok()) return s;
  if (r.rank) {
    if (auto s = ValidateRankPolicy(*r.rank); !s.ok()) return s;
  }
  auto call = NewCall(deadline, wait);
  atp::v1::AtpAttentionOp* op = call->header.mutable_atp_attention();
  op->set_layer_id(r.layer_id);
  if (r.rank) *op->mutable_rank() = internal::ToWireRankPolicy(*r.rank);
  *call->header.mutable_input()->mutable_dense() = internal::ToTensorHeader("x", r.x);
  if (r.output_dtype) call->header.set_output_dtype(internal::ToWireDType(*r.output_dtype));
  call->inputs = {r.x};
  call->layer_id = r.layer_id;
  return call;
}

absl::StatusOr<std::unique_ptr<OpCall>> Build(const ExactAttentionRequest& r, absl::Time deadline,
                                              bool wait) {
  if (auto s = CheckInput(r.x, "x"); !s.ok()) return s;
  auto call = NewCall(deadline, wait);
  atp::v1::ExactAttentionOp* op = call->header.mutable_exact_attention();
  op->set_layer_id(r.layer_id);
  op->set_causal(r.causal);
  *call->header.mutable_input()->mutable_dense() = internal::ToTensorHeader("x", r.x);
  if (r.output_dtype) call->header.set_output_dtype(internal::ToWireDType(*r.output_dtype));
  call->inputs = {r.x};
  call->layer_id = r.layer_id;
  return call;
}

absl::StatusOr<std::unique_ptr<OpCall>> Build(const LowRankLinearRequest& r, absl::Time deadline,
                                              bool wait) {
  auto call = NewCall(deadline, wait);
  atp::v1::LowRankLinearOp* op = call->header.mutable_lowrank_linear();
  op->set_layer_id(r.layer_id);
  op->set_weight(r.weight);
  op->set_output_form(r.factored_output ? atp::v1::OUTPUT_FORM_FACTORED
                                        : atp::v1::OUTPUT_FORM_DENSE);
  if (const auto* x = std::get_if<TensorView>(&r.input)) {
    if (auto s = CheckInput(*x, "x"); !s.ok()) return s;
    if (r.rank) {
      if (auto s = ValidateRankPolicy(*r.rank); !s.ok()) return s;
      *op->mutable_rank() = internal::ToWireRankPolicy(*r.rank);
    }
    *call->header.mutable_input()->mutable_dense() = internal::ToTensorHeader("x", *x);
    call->inputs = {*x};
  } else {
    const auto& f = std::get<FactoredTensorView>(r.input);
    if (auto s = CheckInput(f.u, "u"); !s.ok()) return s;
    if (auto s = CheckInput(f.c, "c"); !s.ok()) return s;
    if (f.u.dim(1) != f.c.dim(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("factored input has u ", ShapeString(f.u.shape), " and c ",
                       ShapeString(f.c.shape), ", want u [L, r] and c [r, d]"));
    }
    atp::v1::FactoredTensor* ft = call->header.mutable_input()->mutable_factored();
    *ft->mutable_u() = internal::ToTensorHeader("u", f.u);
    *ft->mutable_c() = internal::ToTensorHeader("c", f.c);
    call->inputs = {f.u, f.c};
  }
  if (r.output_dtype) call->header.set_output_dtype(internal::ToWireDType(*r.output_dtype));
  call->layer_id = r.layer_id;
  return call;
}

absl::StatusOr<std::unique_ptr<OpCall>> Build(const DecomposeRequest& r, absl::Time deadline,
                                              bool wait) {
  if (auto s = CheckInput(r.x, "x"); !s.ok()) return s;
  if (auto s = ValidateRankPolicy(r.rank); !s.ok()) return s;
  auto call = NewCall(deadline, wait);
  atp::v1::DecomposeOp* op = call->header.mutable_decompose();
  *op->mutable_rank() = internal::ToWireRankPolicy(r.rank);
  switch (r.method) {
    case DecomposeMethod::kAuto:
      op->set_method(atp::v1::DECOMPOSE_METHOD_AUTO);
      break;
    case DecomposeMethod::kExact:
      op->set_method(atp::v1::DECOMPOSE_METHOD_EXACT);
      break;
    case DecomposeMethod::kRandomized:
      op->set_method(atp::v1::DECOMPOSE_METHOD_RANDOMIZED);
      break;
  }
  *call->header.mutable_input()->mutable_dense() = internal::ToTensorHeader("x", r.x);
  if (r.output_dtype) call->header.set_output_dtype(internal::ToWireDType(*r.output_dtype));
  call->inputs = {r.x};
  return call;
}

absl::Status WrongOutputs(const OpOutcome& o, absl::string_view op, size_t want) {
  return absl::InternalError(absl::StrCat("worker ", o.info.worker, " answered ", op, " with ",
                                          o.outputs.size(), " outputs, want ", want));
}

// Outcomes → typed results.
absl::StatusOr<AttentionResult> ToAttention(OpOutcome o) {
  if (!o.status.ok()) return o.status;
  if (o.outputs.size() != 1) return WrongOutputs(o, "attention", 1);
  AttentionResult r;
  r.y = std::move(o.outputs[0]);
  r.rank = o.rank;
  r.captured_energy = o.captured_energy;
  r.info = std::move(o.info);
  return r;
}

absl::StatusOr<LowRankLinearResult> ToLowRankLinear(OpOutcome o) {
  if (!o.status.ok()) return o.status;
  LowRankLinearResult r;
  r.factored = o.factored;
  if (o.factored) {
    if (o.outputs.size() != 2) return WrongOutputs(o, "a factored lowrank_linear", 2);
    r.y_factored.u = std::move(o.outputs[0]);
    r.y_factored.c = std::move(o.outputs[1]);
  } else {
    if (o.outputs.size() != 1) return WrongOutputs(o, "lowrank_linear", 1);
    r.y = std::move(o.outputs[0]);
  }
  r.rank = o.rank;
  r.captured_energy = o.captured_energy;
  r.info = std::move(o.info);
  return r;
}

absl::StatusOr<DecomposeResult> ToDecompose(OpOutcome o) {
  if (!o.status.ok()) return o.status;
  if (o.outputs.size() != 3) return WrongOutputs(o, "decompose", 3);
  DecomposeResult r;
  r.u = std::move(o.outputs[0]);
  r.s = std::move(o.outputs[1]);
  r.vt = std::move(o.outputs[2]);
  r.rank = o.rank;
  r.captured_energy = o.captured_energy;
  r.info = std::move(o.info);
  return r;
}

}  // namespace

// The three forms of every op, written once.
class OffloaderOps {
 public:
  template <typename Request, typename Result, typename Convert>
  static void Async(Offloader* self, const Request& request, Callback<Result> callback,
                    const CallOptions& options, Convert convert, bool wait_default) {
    absl::StatusOr<std::unique_ptr<OpCall>> call =
        Build(request, self->DeadlineOf(options), options.wait_for_ready.value_or(wait_default));
    if (!call.ok()) {
      callback(call.status());
      return;
    }
    (*call)->finish = [callback = std::move(callback), convert](OpOutcome o) mutable {
      callback(convert(std::move(o)));
    };
    std::vector<std::unique_ptr<OpCall>> calls;
    calls.push_back(*std::move(call));
    self->Submit(std::move(calls));
  }

  template <typename Request, typename Result, typename Convert>
  static absl::StatusOr<Result> Sync(Offloader* self, const Request& request,
                                     const CallOptions& options, Convert convert,
                                     bool wait_default) {
    absl::StatusOr<Result> result = absl::UnknownError("not run");
    absl::Notification done;
    Async<Request, Result>(
        self, request,
        [&](absl::StatusOr<Result> r) {
          result = std::move(r);
          done.Notify();
        },
        options, convert, wait_default);
    done.WaitForNotification();
    return result;
  }

  template <typename Request, typename Result, typename Convert>
  static std::vector<absl::StatusOr<Result>> Batch(Offloader* self,
                                                   absl::Span<const Request> requests,
                                                   const CallOptions& options, Convert convert,
                                                   bool wait_default) {
    std::vector<absl::StatusOr<Result>> results;
    results.reserve(requests.size());
    for (size_t i = 0; i < requests.size(); ++i)
      results.emplace_back(absl::UnknownError("not run"));
    absl::Mutex mu;
    size_t pending = requests.size();
    const absl::Time deadline = self->DeadlineOf(options);
    const bool wait = options.wait_for_ready.value_or(wait_default);
    std::vector<std::unique_ptr<OpCall>> calls;
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::StatusOr<std::unique_ptr<OpCall>> call = Build(requests[i], deadline, wait);
      if (!call.ok()) {
        results[i] = call.status();
        absl::MutexLock lock(&mu);
        --pending;
        continue;
      }
      (*call)->finish = [&results, &mu, &pending, i, convert](OpOutcome o) {
        absl::StatusOr<Result> r = convert(std::move(o));
        absl::MutexLock lock(&mu);
        results[i] = std::move(r);
        --pending;
      };
      calls.push_back(*std::move(call));
    }
    if (!calls.empty()) self->Submit(std::move(calls));
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](size_t* n) { return *n == 0; }, &pending));
    return results;
  }
};

#define ATP_CLIENT_DEFINE_OP(Name, Request, Result, Convert)                                     \
  absl::StatusOr<Result> Offloader::Name(const Request& request, const CallOptions& options) {   \
    return OffloaderOps::Sync<Request, Result>(this, request, options, Convert,                  \
                                               WaitForReadyDefault());                           \
  }                                                                                              \
  void Offloader::Name##Async(const Request& request, Callback<Result> callback,                 \
                              const CallOptions& options) {                                      \
    OffloaderOps::Async<Request, Result>(this, request, std::move(callback), options, Convert,   \
                                         WaitForReadyDefault());                                 \
  }                                                                                              \
  std::vector<absl::StatusOr<Result>> Offloader::Name##Batch(absl::Span<const Request> requests, \
                                                             const CallOptions& options) {       \
    return OffloaderOps::Batch<Request, Result>(this, requests, options, Convert,                \
                                                WaitForReadyDefault());                          \
  }

ATP_CLIENT_DEFINE_OP(AtpAttention, AtpAttentionRequest, AttentionResult, ToAttention)
ATP_CLIENT_DEFINE_OP(ExactAttention, ExactAttentionRequest, AttentionResult, ToAttention)
ATP_CLIENT_DEFINE_OP(LowRankLinear, LowRankLinearRequest, LowRankLinearResult, ToLowRankLinear)
ATP_CLIENT_DEFINE_OP(Decompose, DecomposeRequest, DecomposeResult, ToDecompose)

#undef ATP_CLIENT_DEFINE_OP

}  // namespace atp::client
