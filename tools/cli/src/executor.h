// The Executor seam: where an `atp run` command computes.
//
// Commands read files, build plain kernel arguments and hand them to an Executor; they never see a
// Backend. The local executor runs the ops in-process on a kernels::Backend. A remote executor
// (`--target HOST:PORT`, through the client library) plugs in behind the same calls: add its fields
// to ExecutorOptions and its construction to CreateExecutor. Not thread-safe: one command, one
// executor.
#ifndef ATP_CLI_EXECUTOR_H_
#define ATP_CLI_EXECUTOR_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "atp/kernels/attention.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/lowrank_linear.h"
#include "atp/kernels/principal_bases.h"
#include "atp/kernels/tensor.h"

namespace atp::cli {

class Executor {
 public:
  virtual ~Executor() = default;

  // Where the work runs, for people: "local cpu backend (CPU x2 ...)".
  virtual std::string Describe() const = 0;

  // Each call loads `layer` where the work runs and computes one op; the arguments' tensor views
  // must stay valid during the call. Errors are the backend's (or, remotely, the worker's).
  virtual absl::StatusOr<kernels::AtpAttentionResult> AtpAttention(
      kernels::LayerSpec layer, const kernels::AtpAttentionArgs& args) = 0;
  virtual absl::StatusOr<kernels::Tensor> ExactAttention(
      kernels::LayerSpec layer, const kernels::ExactAttentionArgs& args) = 0;
  virtual absl::StatusOr<kernels::LowRankLinearResult> LowRankLinear(
      kernels::LayerSpec layer, const kernels::LowRankLinearArgs& args) = 0;
  virtual absl::StatusOr<kernels::PrincipalBases> Decompose(
      const kernels::PrincipalBasesArgs& args) = 0;
};

struct ExecutorOptions {
  // Local backend: "cpu", "cuda" or "auto".
  std::string backend = "cpu";
  // Non-empty: run on this atp worker through the client library (remote_executor.h), with these
  // TLS CA and token files and this deadline per call.
  std::string target;
  std::string tls_ca;
  std::string tls_server_name;
  std::string token_file;
  absl::Duration timeout = absl::Seconds(600);
  // Called before and between compute steps (from the calling thread), e.g. to show progress.
  std::function<void()> on_step;
};

// The executor the options select: remote when a target is set, else local. Errors are the
// backend's, e.g. FAILED_PRECONDITION when `cuda` is asked for and there is no usable device.
absl::StatusOr<std::unique_ptr<Executor>> CreateExecutor(const ExecutorOptions& options);

}  // namespace atp::cli

#endif  // ATP_CLI_EXECUTOR_H_
