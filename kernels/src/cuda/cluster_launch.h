// Launching a grid that is one thread-block cluster (the small factorisations that keep their
// matrix in the cluster's distributed shared memory: cluster_cholesky.cu, small_eigen.cu), and
// the per-device facts such kernels depend on. Header-only; for .cu files (no absl).
#ifndef ATP_KERNELS_CUDA_CLUSTER_LAUNCH_H_
#define ATP_KERNELS_CUDA_CLUSTER_LAUNCH_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <utility>

namespace atp::kernels::cuda {

// A launch of one 1-D cluster of `blocks` blocks (the whole grid). Not copyable: the
// configuration points at the attribute it holds.
class ClusterLaunch {
 public:
  ClusterLaunch(int blocks, int threads, size_t dynamic_smem, cudaStream_t stream) {
    config_.gridDim = dim3(static_cast<unsigned>(blocks));
    config_.blockDim = dim3(static_cast<unsigned>(threads));
    config_.dynamicSmemBytes = dynamic_smem;
    config_.stream = stream;
    attribute_.id = cudaLaunchAttributeClusterDimension;
    attribute_.val.clusterDim.x = static_cast<unsigned>(blocks);
    attribute_.val.clusterDim.y = 1;
    attribute_.val.clusterDim.z = 1;
    config_.attrs = &attribute_;
    config_.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;

  template <typename... Params, typename... Args>
  cudaError_t Run(void (*kernel)(Params...), Args&&... args) {
    const cudaError_t e = cudaLaunchKernelEx(&config_, kernel, std::forward<Args>(args)...);
    return e != cudaSuccess ? e : cudaGetLastError();
  }
  const cudaLaunchConfig_t& config() const { return config_; }

 private:
  cudaLaunchConfig_t config_ = {};
  cudaLaunchAttribute attribute_ = {};
};

// The largest cluster of 16 or 8 blocks of `threads` threads and `dynamic_smem` bytes each that
// the current device can keep resident for `kernel` (whose non-portable cluster size and dynamic
// shared memory limit the caller has already raised), or 0.
template <typename... Params>
int LargestResidentCluster(void (*kernel)(Params...), int threads, size_t dynamic_smem) {
  for (const int blocks : {16, 8}) {
    const ClusterLaunch launch(blocks, threads, dynamic_smem, nullptr);
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &launch.config()) == cudaSuccess &&
        clusters >= 1) {
      return blocks;
    }
  }
  return 0;
}

// Query(device) for the current device, computed once per device and process (thread-safe);
// Facts() when there is no current device. Errors the query leaves behind are cleared: a failed
// query only means "not supported".
template <typename Facts, Facts (*Query)(int device)>
Facts PerDevice() {
  static std::mutex mu;
  static auto* cache = new std::map<int, Facts>();  // never destroyed: used until exit
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return Facts();
  }
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(device);
  if (it == cache->end()) {
    it = cache->emplace(device, Query(device)).first;
    (void)cudaGetLastError();
  }
  return it->second;
}

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_CLUSTER_LAUNCH_H_
