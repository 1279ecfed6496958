#include "executor.h"

#include "absl/strings/str_cat.h"
#include "atp/kernels/backend.h"
#include "remote_executor.h"

namespace atp::cli {
namespace {

// Runs every op in-process on one backend.
class LocalExecutor : public Executor {
 public:
  LocalExecutor(std::unique_ptr<kernels::Backend> backend, std::function<void()> on_step)
      : backend_(std::move(backend)) {
    if (on_step) {
      ctx_.check = [on_step = std::move(on_step)]() {
        on_step();
        return absl::OkStatus();
      };
    }
  }

  std::string Describe() const override {
    return absl::StrCat("local ", backend_->name(), " backend (", backend_->device_description(),
                        ")");
  }

  absl::StatusOr<kernels::AtpAttentionResult> AtpAttention(
      kernels::LayerSpec layer, const kernels::AtpAttentionArgs& args) override {
    absl::StatusOr<std::unique_ptr<kernels::LayerHandle>> handle =
        backend_->LoadLayer(std::move(layer));
    if (!handle.ok()) return handle.status();
    return backend_->AtpAttention(**handle, args, ctx_);
  }

  absl::StatusOr<kernels::Tensor> ExactAttention(kernels::LayerSpec layer,
                                                 const kernels::ExactAttentionArgs& args) override {
    absl::StatusOr<std::unique_ptr<kernels::LayerHandle>> handle =
        backend_->LoadLayer(std::move(layer));
    if (!handle.ok()) return handle.status();
    return backend_->ExactAttention(**handle, args, ctx_);
  }

  absl::StatusOr<kernels::LowRankLinearResult> LowRankLinear(
      kernels::LayerSpec layer, const kernels::LowRankLinearArgs& args) override {
    absl::StatusOr<std::unique_ptr<kernels::LayerHandle>> handle =
        backend_->LoadLayer(std::move(layer));
    if (!handle.ok()) return handle.status();
    return backend_->LowRankLinear(**handle, args, ctx_);
  }

  absl::StatusOr<kernels::PrincipalBases> Decompose(
      const kernels::PrincipalBasesArgs& args) override {
    return backend_->Decompose(args, ctx_);
  }

 private:
  std::unique_ptr<kernels::Backend> backend_;
  kernels::ExecContext ctx_;  // A local run is never cancelled: Ctrl-C ends the process.
};

}  // namespace

absl::StatusOr<std::unique_ptr<Executor>> CreateExecutor(const ExecutorOptions& options) {
  if (!options.target.empty()) {
    return CreateRemoteExecutor(
        RemoteOptions{options.target, options.tls_ca, options.tls_server_name, options.token_file,
                      options.timeout},
        options.on_step);
  }
  absl::StatusOr<std::unique_ptr<kernels::Backend>> backend =
      kernels::CreateBackend(options.backend);
  if (!backend.ok()) return backend.status();
  return std::make_unique<LocalExecutor>(*std::move(backend), options.on_step);
}

}  // namespace atp::cli
