#include "atp/kernels/backend.h"

#include "absl/strings/str_cat.h"

namespace atp::kernels {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(absl::string_view kind, int device) {
  if (kind == "cpu") return CreateCpuBackend();
  if (kind == "cuda") return CreateCudaBackend(device);
  if (kind == "auto") {
    auto cuda = CreateCudaBackend(device);
    if (cuda.ok()) return cuda;
    return CreateCpuBackend();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend \"", kind, "\", want auto, cpu or cuda"));
}

}  // namespace atp::kernels
