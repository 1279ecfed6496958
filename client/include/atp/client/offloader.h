// Offloader: what host model code offloads layers to — a `Client` (one worker) or a `Pool` (many).
// Code written against Offloader runs unchanged on either.
//
// Every operation exists in three forms, all taking CallOptions (deadline; default from the
// options the Client or Pool was created with):
//   Result  Op(request, options)                      synchronous
//   void    OpAsync(request, callback, options)       asynchronous: `callback` runs exactly once,
//                                                     with the result or the error, on an SDK
//                                                     thread (or on the calling thread when the
//                                                     request is refused before anything is sent)
//   vector  OpBatch(requests, options)                synchronous, the requests in flight together
//                                                     (pipelined on one stream of a Client; spread
//                                                     over the workers of a Pool), one result each
// Callbacks must not block for long: they run on the threads that move data. They may submit
// further calls.
//
// Errors are absl::Status with the worker's code and message (INVALID_ARGUMENT naming the bad
// shape, NOT_FOUND naming an unknown layer, RESOURCE_EXHAUSTED for limits, DEADLINE_EXCEEDED, ...)
// or a transport code (UNAVAILABLE naming the worker that could not be reached).
//
// Input views must stay valid until the call has finished (see tensor.h). Thread-safe: any number
// of threads may call any method at once.
#ifndef ATP_CLIENT_OFFLOADER_H_
#define ATP_CLIENT_OFFLOADER_H_

#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "atp/client/layer.h"
#include "atp/client/ops.h"
#include "atp/client/options.h"

namespace atp::client {

template <typename T>
using Callback = absl::AnyInvocable<void(absl::StatusOr<T>)>;
using StatusCallback = absl::AnyInvocable<void(absl::Status)>;

namespace internal {
struct OpCall;
}  // namespace internal

class Offloader {
 public:
  virtual ~Offloader() = default;

  // Registers `layer` so that requests can name it by layer.id(). Idempotent (the worker keys
  // layers by content digest); the SDK keeps the spec and registers it again by itself on a worker
  // that lost it. A Client registers on its worker; a Pool on the workers its placement chooses.
  // The same id with other content is ALREADY_EXISTS.
  virtual absl::Status RegisterLayer(const LayerSpec& layer, const CallOptions& options = {}) = 0;
  virtual void RegisterLayerAsync(const LayerSpec& layer, StatusCallback callback,
                                  const CallOptions& options = {}) = 0;
  // Forgets a layer and removes it from the workers that hold it. NOT_FOUND when unknown.
  virtual absl::Status RemoveLayer(absl::string_view layer_id, const CallOptions& options = {}) = 0;
  virtual void RemoveLayerAsync(absl::string_view layer_id, StatusCallback callback,
                                const CallOptions& options = {}) = 0;

  absl::StatusOr<AttentionResult> AtpAttention(const AtpAttentionRequest& request,
                                               const CallOptions& options = {});
  void AtpAttentionAsync(const AtpAttentionRequest& request, Callback<AttentionResult> callback,
                         const CallOptions& options = {});
  std::vector<absl::StatusOr<AttentionResult>> AtpAttentionBatch(
      absl::Span<const AtpAttentionRequest> requests, const CallOptions& options = {});

  absl::StatusOr<AttentionResult> ExactAttention(const ExactAttentionRequest& request,
                                                 const CallOptions& options = {});
  void ExactAttentionAsync(const ExactAttentionRequest& request, Callback<AttentionResult> callback,
                           const CallOptions& options = {});
  std::vector<absl::StatusOr<AttentionResult>> ExactAttentionBatch(
      absl::Span<const ExactAttentionRequest> requests, const CallOptions& options = {});

  absl::StatusOr<LowRankLinearResult> LowRankLinear(const LowRankLinearRequest& request,
                                                    const CallOptions& options = {});
  void LowRankLinearAsync(const LowRankLinearRequest& request,
                          Callback<LowRankLinearResult> callback, const CallOptions& options = {});
  std::vector<absl::StatusOr<LowRankLinearResult>> LowRankLinearBatch(
      absl::Span<const LowRankLinearRequest> requests, const CallOptions& options = {});

  absl::StatusOr<DecomposeResult> Decompose(const DecomposeRequest& request,
                                            const CallOptions& options = {});
  void DecomposeAsync(const DecomposeRequest& request, Callback<DecomposeResult> callback,
                      const CallOptions& options = {});
  std::vector<absl::StatusOr<DecomposeResult>> DecomposeBatch(
      absl::Span<const DecomposeRequest> requests, const CallOptions& options = {});

 protected:
  // Runs prepared calls (several when they come from one batch call); each call's completion
  // (OpCall::finish) runs exactly once.
  virtual void Submit(std::vector<std::unique_ptr<internal::OpCall>> calls) = 0;
  // The deadline of a call made with `options`.
  virtual absl::Time DeadlineOf(const CallOptions& options) const = 0;
  // CallOptions::wait_for_ready when a call leaves it unset.
  virtual bool WaitForReadyDefault() const = 0;

 private:
  friend class OffloaderOps;
};

}  // namespace atp::client

#endif  // ATP_CLIENT_OFFLOADER_H_
