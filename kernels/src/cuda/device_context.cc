#include "cuda/device_context.h"

#include <cuda.h>

#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cuda/cuda_status.h"
#include "cuda/sdpa_engine.h"

namespace atp::kernels::cuda {
namespace {

constexpr size_t kCublasWorkspaceBytes = size_t{64} << 20;

// cuStreamWaitValue32 through the runtime (so that nothing links the driver library), or null.
using StreamWaitValue32Fn = CUresult (*)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
StreamWaitValue32Fn StreamWaitValue32() {
  static const StreamWaitValue32Fn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &p, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return StreamWaitValue32Fn{nullptr};
    }
    return reinterpret_cast<StreamWaitValue32Fn>(p);
  }();
  return fn;
}

bool EnvFlag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace

DeviceContext::~DeviceContext() {
  // Release in dependency order: everything that may use the stream first.
  (void)cudaSetDevice(device_);
  if (side_stream_) (void)cudaStreamSynchronize(side_stream_.get());
  if (stream_) (void)cudaStreamSynchronize(stream_.get());
  sdpa_.reset();
  cusolver_params_.Reset();
  cusolver_.Reset();
  side_cublas_.Reset();
  side_cublas_workspace_.Reset();
  cublas_.Reset();
  cublas_workspace_.Reset();
  pool_.Reset();
  start_flag_.Reset();
  staging_.Reset();
  staged_event_.Reset();
  fork_event_.Reset();
  join_event_.Reset();
  side_stream_.Reset();
  stream_.Reset();
}

absl::StatusOr<std::unique_ptr<DeviceContext>> DeviceContext::Create(int device) {
  int count = 0;  // left unwritten without a driver (BUILD-NOTES.md gotcha 6)
  const cudaError_t count_err = cudaGetDeviceCount(&count);
  if (count_err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable CUDA device: cudaGetDeviceCount failed: ", cudaGetErrorName(count_err), " (",
        cudaGetErrorString(count_err), ")"));
  }
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device ", device, ": this machine has ", count, " (want 0..", count - 1, ")"));
  }
  auto ctx = std::unique_ptr<DeviceContext>(new DeviceContext());
  ctx->device_ = device;
  ATP_CUDA(cudaSetDevice(device));
  ATP_CUDA(cudaGetDeviceProperties(&ctx->props_, device));
  if (ctx->props_.major < 7) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", device, " (", ctx->props_.name, ") has compute capability ",
                     ctx->props_.major, ".", ctx->props_.minor, ", want >= 7.0"));
  }

  cudaStream_t stream = nullptr;
  ATP_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ctx->stream_ = CudaStream(stream);

  cudaMemPoolProps pool_props{};
  pool_props.allocType = cudaMemAllocationTypePinned;
  pool_props.location.type = cudaMemLocationTypeDevice;
  pool_props.location.id = device;
  cudaMemPool_t pool = nullptr;
  ATP_CUDA(cudaMemPoolCreate(&pool, &pool_props));
  ctx->pool_ = CudaMemPool(pool);
  uint64_t keep = std::numeric_limits<uint64_t>::max();  // trimmed explicitly (TrimPool)
  ATP_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));

  cublasHandle_t cublas = nullptr;
  ATP_CUBLAS(cublasCreate(&cublas));
  ctx->cublas_ = CublasHandle(cublas);
  ATP_CUBLAS(cublasSetStream(cublas, stream));
  // No TF32 anywhere: f32 GEMMs also ask for the pedantic compute type (blas.cc).
  ATP_CUBLAS(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH));
  // A fixed workspace keeps cuBLAS from allocating inside stream capture.
  ATP_ASSIGN_OR_RETURN(ctx->cublas_workspace_, DeviceBuffer::Malloc(kCublasWorkspaceBytes));
  ATP_CUBLAS(cublasSetWorkspace(cublas, ctx->cublas_workspace_.get(), kCublasWorkspaceBytes));

  cudaStream_t side = nullptr;
  ATP_CUDA(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  ctx->side_stream_ = CudaStream(side);
  cublasHandle_t side_cublas = nullptr;
  ATP_CUBLAS(cublasCreate(&side_cublas));
  ctx->side_cublas_ = CublasHandle(side_cublas);
  ATP_CUBLAS(cublasSetStream(side_cublas, side));
  ATP_CUBLAS(cublasSetMathMode(side_cublas, CUBLAS_DEFAULT_MATH));
  ATP_ASSIGN_OR_RETURN(ctx->side_cublas_workspace_, DeviceBuffer::Malloc(kCublasWorkspaceBytes));
  ATP_CUBLAS(
      cublasSetWorkspace(side_cublas, ctx->side_cublas_workspace_.get(), kCublasWorkspaceBytes));
  for (CudaEvent* e : {&ctx->fork_event_, &ctx->join_event_, &ctx->staged_event_}) {
    cudaEvent_t raw = nullptr;
    ATP_CUDA(cudaEventCreateWithFlags(&raw, cudaEventDisableTiming));
    *e = CudaEvent(raw);
  }
  ATP_ASSIGN_OR_RETURN(ctx->start_flag_, DeviceBuffer::Malloc(sizeof(unsigned)));
  ATP_ASSIGN_OR_RETURN(ctx->staging_, PinnedBuffer::Allocate(kStagingBytes));

  cusolverDnHandle_t cusolver = nullptr;
  ATP_CUSOLVER(cusolverDnCreate(&cusolver));
  ctx->cusolver_ = CusolverHandle(cusolver);
  ATP_CUSOLVER(cusolverDnSetStream(cusolver, stream));
  cusolverDnParams_t params = nullptr;
  ATP_CUSOLVER(cusolverDnCreateParams(&params));
  ctx->cusolver_params_ = CusolverParams(params);

  ctx->poison_ = EnvFlag("ATP_CUDA_POISON");
  if (EnvFlag("ATP_CUDA_NO_CUDNN")) ctx->DisableSdpa();
  return ctx;
}

SdpaEngine* DeviceContext::sdpa() {
  if (!sdpa_tried_) {
    sdpa_tried_ = true;
    auto engine = SdpaEngine::Create(device_, stream_.get());
    if (engine.ok()) {
      sdpa_ = std::move(engine).value();
      sdpa_status_ = absl::OkStatus();
    } else {
      sdpa_status_ = engine.status();
    }
  }
  return sdpa_.get();
}

void DeviceContext::DisableSdpa() {
  sdpa_.reset();
  sdpa_tried_ = true;
  sdpa_status_ = absl::UnavailableError("cuDNN attention disabled");
}

absl::Status DeviceContext::MakeCurrent() const {
  ATP_CUDA(cudaSetDevice(device_));
  if (sdpa_) ATP_RETURN_IF_ERROR(sdpa_->SetDevice(device_));
  return absl::OkStatus();
}

absl::StatusOr<DeviceBuffer> DeviceContext::Alloc(size_t bytes) {
  // Round up so that every buffer stays 256-byte aligned for vector loads and cuDNN.
  const size_t rounded = (bytes + 255) & ~size_t{255};
  auto buffer = DeviceBuffer::FromPool(rounded, pool_.get(), stream());
  if (!buffer.ok()) {
    if (absl::IsResourceExhausted(buffer.status())) {
      return absl::ResourceExhaustedError(absl::StrCat("CUDA device ", device_, " has no room for ",
                                                       bytes, " bytes of scratch memory (",
                                                       memory().free_bytes, " bytes free)"));
    }
    return buffer.status();
  }
  if (poison_ && rounded > 0) {
    ATP_CUDA(cudaMemsetAsync(buffer->get(), 0xFF, rounded, stream()));
  }
  return buffer;
}

absl::Status DeviceContext::CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  ATP_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
  return absl::OkStatus();
}

absl::Status DeviceContext::CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  ATP_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
  return Synchronize();
}

absl::Status DeviceContext::Synchronize() {
  ATP_CUDA(cudaStreamSynchronize(stream()));
  return absl::OkStatus();
}

absl::Status DeviceContext::ForkSide() {
  ATP_CUDA(cudaEventRecord(fork_event_.get(), stream_.get()));
  ATP_CUDA(cudaStreamWaitEvent(side_stream_.get(), fork_event_.get(), 0));
  return absl::OkStatus();
}

absl::Status DeviceContext::StageToHost(size_t offset, const void* src, size_t bytes) {
  if (offset > kStagingBytes || bytes > kStagingBytes - offset) {
    return absl::InternalError(absl::StrCat("StageToHost: ", bytes, " bytes at offset ", offset,
                                            " exceed the ", kStagingBytes, "-byte staging area"));
  }
  ATP_CUDA(cudaMemcpyAsync(static_cast<char*>(staging_.get()) + offset, src, bytes,
                           cudaMemcpyDeviceToHost, stream()));
  ATP_CUDA(cudaEventRecord(staged_event_.get(), stream()));
  return absl::OkStatus();
}

absl::StatusOr<const void*> DeviceContext::WaitStaged() {
  ATP_CUDA(cudaEventSynchronize(staged_event_.get()));
  return static_cast<const void*>(staging_.get());
}

absl::Status DeviceContext::ArmStartFlag() {
  ATP_CUDA(cudaMemsetAsync(start_flag_.get(), 0, sizeof(unsigned), stream_.get()));
  return ForkSide();
}

bool DeviceContext::SideWaitsForStart() {
  // Only a matter of speed: without the wait the side work merely starts earlier.
  const StreamWaitValue32Fn wait = StreamWaitValue32();
  return wait != nullptr &&
         wait(side_stream_.get(), reinterpret_cast<CUdeviceptr>(start_flag_.get()), 1,
              CU_STREAM_WAIT_VALUE_GEQ) == CUDA_SUCCESS;
}

absl::Status DeviceContext::JoinSide() {
  ATP_CUDA(cudaEventRecord(join_event_.get(), side_stream_.get()));
  ATP_CUDA(cudaStreamWaitEvent(stream_.get(), join_event_.get(), 0));
  return absl::OkStatus();
}

absl::Status DeviceContext::Launched(cudaError_t err, absl::string_view what) {
  return CudaStatus(err, what);
}

void DeviceContext::TrimPool(size_t keep_bytes) {
  if (pool_) (void)cudaMemPoolTrimTo(pool_.get(), keep_bytes);
}

DeviceMemoryInfo DeviceContext::memory() const {
  DeviceMemoryInfo info;
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaSetDevice(device_) != cudaSuccess ||
      cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return info;
  }
  info.total_bytes = total_bytes;
  info.free_bytes = free_bytes;
  uint64_t reserved = 0, used = 0;
  if (pool_ &&
      cudaMemPoolGetAttribute(pool_.get(), cudaMemPoolAttrReservedMemCurrent, &reserved) ==
          cudaSuccess &&
      cudaMemPoolGetAttribute(pool_.get(), cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess &&
      reserved > used) {
    info.free_bytes += reserved - used;
  }
  return info;
}

std::string DeviceContext::Description() const {
  return absl::StrFormat("%s (sm_%d%d, %d GiB)", props_.name, props_.major, props_.minor,
                         static_cast<int>(props_.totalGlobalMem >> 30));
}

}  // namespace atp::kernels::cuda
