// SdpaEngine on cuDNN 9's fused flash attention through the cuDNN C++ front end. The front end
// loads libcudnn.so.9 at run time (dynamic loading), so a machine without cuDNN still runs every
// other part of the backend. This is the only translation unit that sees cuDNN: its errors and
// the front end's exceptions become absl::Status here.
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include <cudnn_frontend.h>

#include "absl/strings/str_cat.h"
#include "cuda/cuda_status.h"
#include "cuda/device_context.h"
#include "cuda/sdpa_engine.h"

// The front end's dynamic loader looks cuDNN's symbols up through this handle.
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend

namespace atp::kernels::cuda {
namespace {

namespace fe = cudnn_frontend;

absl::Status LoadCudnn() {
  static std::mutex mu;
  static absl::Status* loaded = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (loaded != nullptr) return *loaded;
  void* handle = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    loaded = new absl::Status(absl::FailedPreconditionError(
        absl::StrCat("cannot load libcudnn.so.9 (", err ? err : "not found",
                     "); using the own attention path")));
    return *loaded;
  }
  fe::cudnn_dlhandle = handle;
  loaded = new absl::Status(absl::OkStatus());
  return *loaded;
}

absl::Status FeStatus(fe::error_t err, const char* what) {
  if (err.is_good()) return absl::OkStatus();
  const std::string message = absl::StrCat("cuDNN SDPA ", what, ": ", err.get_message());
  switch (err.get_code()) {
    case fe::error_code_t::GRAPH_NOT_SUPPORTED:
    case fe::error_code_t::GRAPH_EXECUTION_PLAN_CREATION_FAILED:
    case fe::error_code_t::HEURISTIC_QUERY_FAILED:
    case fe::error_code_t::UNSUPPORTED_GRAPH_FORMAT:
    case fe::error_code_t::ATTRIBUTE_NOT_SET:
    case fe::error_code_t::SHAPE_DEDUCTION_FAILED:
    case fe::error_code_t::INVALID_VALUE:
    case fe::error_code_t::NVRTC_COMPILATION_FAILED:
      return absl::UnimplementedError(message);
    default:
      return absl::InternalError(message);
  }
}

using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, uint32_t, bool>;

PlanKey KeyOf(const SdpaArgs& a) {
  uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &a.scale, sizeof(scale_bits));
  return PlanKey{static_cast<int>(a.type), a.lq, a.lk, a.heads, a.kv_heads, a.head_dim,
                 a.q_ld, a.k_ld, a.v_ld, a.o_ld, scale_bits, a.causal};
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

class CudnnSdpaEngine : public SdpaEngine {
 public:
  explicit CudnnSdpaEngine(cudnnHandle_t handle, size_t version)
      : handle_(handle), version_(version) {}
  ~CudnnSdpaEngine() override {
    plans_.clear();
    try {
      (void)fe::detail::destroy_handle(handle_);
    } catch (...) {
    }
  }

  absl::Status Run(DeviceContext& ctx, const SdpaArgs& a) override;
  absl::Status SetDevice(int device) override {
    // cuDNN and the run-time-loaded CUDA runtime use the thread's current context, which the
    // backend's own runtime has just set.
    (void)device;
    return absl::OkStatus();
  }
  std::string Version() const override {
    return absl::StrCat("cuDNN ", version_ / 10000, ".", (version_ / 100) % 100, ".",
                        version_ % 100, " (front end ", CUDNN_FRONTEND_MAJOR_VERSION, ".",
                        CUDNN_FRONTEND_MINOR_VERSION, ".", CUDNN_FRONTEND_PATCH_VERSION, ")");
  }

 private:
  struct Plan {
    absl::Status status;  // UNIMPLEMENTED for shapes cuDNN does not take (cached too)
    std::shared_ptr<fe::graph::Graph> graph;
    std::shared_ptr<fe::graph::Tensor_attributes> q, k, v, o;
    int64_t workspace = 0;
  };
  Plan Build(const SdpaArgs& a);
  Plan BuildOrThrow(const SdpaArgs& a);

  cudnnHandle_t handle_;
  size_t version_;
  std::map<PlanKey, Plan> plans_;
};

CudnnSdpaEngine::Plan CudnnSdpaEngine::Build(const SdpaArgs& a) {
  Plan plan;
  try {
    plan = BuildOrThrow(a);
  } catch (const std::exception& e) {
    plan = Plan();
    plan.status = absl::InternalError(absl::StrCat("cuDNN SDPA build: ", e.what()));
  }
  // A shape cuDNN cannot build a plan for is one it does not support: the caller falls back.
  if (!plan.status.ok() && !absl::IsUnimplemented(plan.status)) {
    plan.status = absl::UnimplementedError(plan.status.message());
  }
  return plan;
}

CudnnSdpaEngine::Plan CudnnSdpaEngine::BuildOrThrow(const SdpaArgs& a) {
  Plan plan;
  const int64_t h = a.heads, hk = a.kv_heads, dh = a.head_dim;
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(a.type == DevType::kBF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  // [batch, heads, sequence, head_dim] over row-major [sequence, heads * head_dim] buffers.
  plan.q = g->tensor(fe::graph::Tensor_attributes()
                         .set_name("Q")
                         .set_dim({1, h, a.lq, dh})
                         .set_stride({a.lq * a.q_ld, dh, a.q_ld, 1}));
  plan.k = g->tensor(fe::graph::Tensor_attributes()
                         .set_name("K")
                         .set_dim({1, hk, a.lk, dh})
                         .set_stride({a.lk * a.k_ld, dh, a.k_ld, 1}));
  plan.v = g->tensor(fe::graph::Tensor_attributes()
                         .set_name("V")
                         .set_dim({1, hk, a.lk, dh})
                         .set_stride({a.lk * a.v_ld, dh, a.v_ld, 1}));
  auto options =
      fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(false).set_attn_scale(
          a.scale);
  if (a.causal) options.set_causal_mask(true);
  auto [o, stats] = g->sdpa(plan.q, plan.k, plan.v, options);
  (void)stats;
  o->set_output(true).set_dim({1, h, a.lq, dh}).set_stride({a.lq * a.o_ld, dh, a.o_ld, 1});
  plan.o = o;

  plan.status = FeStatus(g->validate(), "validate");
  if (plan.status.ok()) plan.status = FeStatus(g->build_operation_graph(handle_), "operation graph");
  if (plan.status.ok()) {
    plan.status = FeStatus(g->create_execution_plans({fe::HeurMode_t::A}), "execution plans");
  }
  if (plan.status.ok()) plan.status = FeStatus(g->check_support(handle_), "support");
  if (plan.status.ok()) plan.status = FeStatus(g->build_plans(handle_), "build plans");
  if (plan.status.ok()) {
    plan.workspace = g->get_workspace_size();
    plan.graph = std::move(g);
  }
  return plan;
}

absl::Status CudnnSdpaEngine::Run(DeviceContext& ctx, const SdpaArgs& a) {
  if (a.type != DevType::kBF16 && a.type != DevType::kF16) {
    return absl::UnimplementedError("cuDNN SDPA takes f16/bf16 only");
  }
  if (a.head_dim % 8 != 0 || a.head_dim > 256 || a.q_ld % 8 != 0 || a.k_ld % 8 != 0 ||
      a.v_ld % 8 != 0 || a.o_ld % 8 != 0 || !Aligned16(a.q) || !Aligned16(a.k) ||
      !Aligned16(a.v) || !Aligned16(a.o) || a.kv_heads <= 0 || a.heads % a.kv_heads != 0) {
    return absl::UnimplementedError(absl::StrCat(
        "cuDNN SDPA wants head_dim a multiple of 8 up to 256 and aligned rows (head_dim ",
        a.head_dim, ")"));
  }
  try {
    const PlanKey key = KeyOf(a);
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, Build(a)).first;
    const Plan& plan = it->second;
    if (!plan.status.ok()) return plan.status;
    ATP_ASSIGN_OR_RETURN(DeviceBuffer workspace,
                         ctx.Alloc(static_cast<size_t>(std::max<int64_t>(plan.workspace, 0))));
    const cudnnStatus_t st = fe::detail::set_stream(handle_, ctx.stream());
    if (st != CUDNN_STATUS_SUCCESS) {
      return absl::InternalError(absl::StrCat("cudnnSetStream failed: status ",
                                              static_cast<int>(st)));
    }
    std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*> pack = {
        {plan.q, const_cast<void*>(a.q)},
        {plan.k, const_cast<void*>(a.k)},
        {plan.v, const_cast<void*>(a.v)},
        {plan.o, a.o}};
    ATP_RETURN_IF_ERROR(FeStatus(plan.graph->execute(handle_, pack, workspace.get()), "execute"));
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cuDNN SDPA: ", e.what()));
  } catch (...) {
    return absl::InternalError("cuDNN SDPA: unknown exception");
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<SdpaEngine>> SdpaEngine::Create(int device, cudaStream_t stream) {
  (void)device;
  ATP_RETURN_IF_ERROR(LoadCudnn());
  try {
    const size_t version = fe::detail::get_backend_version();
    if (version < 90000) {
      return absl::FailedPreconditionError(
          absl::StrCat("libcudnn.so.9 reports version ", version, ", want >= 9.0"));
    }
    cudnnHandle_t handle = nullptr;
    const cudnnStatus_t st = fe::detail::create_handle(&handle);
    if (st != CUDNN_STATUS_SUCCESS) {
      return absl::FailedPreconditionError(
          absl::StrCat("cudnnCreate failed: ", fe::detail::get_error_string(st)));
    }
    auto engine = std::make_unique<CudnnSdpaEngine>(handle, version);
    if (fe::detail::set_stream(handle, stream) != CUDNN_STATUS_SUCCESS) {
      return absl::FailedPreconditionError("cudnnSetStream failed");
    }
    return engine;
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(absl::StrCat("cuDNN unavailable: ", e.what()));
  } catch (...) {
    return absl::FailedPreconditionError("cuDNN unavailable: unknown exception");
  }
}

}  // namespace atp::kernels::cuda
