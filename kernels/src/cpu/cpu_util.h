// Small helpers of the CPU backend: f32 views of inputs, outputs in any dtype, row-major GEMM, and
// the backend's own parallel loops. Private to kernels/src/cpu/.
//
// Threading model: OpenBLAS runs single-threaded under the CPU backend and the backend splits the
// work over its own threads (ParallelGemm, ParallelForDynamic). OpenBLAS's pool threads spin after
// every call; mixed with the backend's own threads (softmax between GEMMs) they fought for the
// cores and exact attention ran 2–3× slower than with this split (measured on 2 cores).
#ifndef ATP_KERNELS_SRC_CPU_CPU_UTIL_H_
#define ATP_KERNELS_SRC_CPU_CPU_UTIL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "atp/kernels/dtype.h"
#include "atp/kernels/tensor.h"

namespace atp::kernels::cpu {

// What every CPU op needs from the backend: its thread count and whether to poison outputs.
struct CpuEnv {
  int threads = 1;
  // Fill every output buffer with NaN before computing it, so unwritten elements show.
  bool poison = false;
};

// An f32 view of an input tensor: borrows f32 data, converts f16/bf16 into an owned copy.
class F32Input {
 public:
  explicit F32Input(const TensorView& view);
  F32Input(const F32Input&) = delete;
  F32Input& operator=(const F32Input&) = delete;
  const float* data() const { return data_; }

 private:
  std::vector<float> owned_;
  const float* data_ = nullptr;
};

// An f32 buffer of n elements that the caller overwrites entirely: uninitialised, or NaN-filled
// when env.poison.
using Buffer = std::unique_ptr<float[]>;
Buffer NewBuffer(const CpuEnv& env, int64_t n);

// A tensor of `dtype` holding `values` (f32, rows × cols with leading dimension `ld`).
Tensor ToTensor(const float* values, int64_t rows, int64_t cols, int64_t ld, DType dtype);
Tensor ToTensor(const float* values, Shape shape, DType dtype);

// C[m×n] = alpha·op(A)·op(B) + beta·C, row-major (cblas_sgemm), on the calling thread.
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The same product split over env.threads along the longer of m and n (small products run on the
// calling thread).
void ParallelGemm(const CpuEnv& env, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                  float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                  float* c, int64_t ldc);

// Y[rows×n] = X[rows×d]·Wᵀ + 1·bᵀ, the nn.Linear map; bias may be null. ldy = n.
void Linear(const CpuEnv& env, const float* x, int64_t rows, int64_t d, const float* w, int64_t n,
            const float* bias, float* y);

// Runs fn(begin, end) over [0, n) split into at most `threads` contiguous ranges, on the calling
// thread and threads - 1 new ones. Blocks until every range is done.
void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(worker, task) for every task in [0, n) on at most `threads` workers (the calling thread
// is worker 0), each taking the next task when it finishes one: for tasks of unequal cost.
void ParallelForDynamic(int64_t n, int threads, const std::function<void(int, int64_t)>& fn);

// Row-wise softmax in place of rows × n values (leading dimension ld), with the row maximum
// subtracted and f32 sums; the first `valid(i)` entries of row i take part and the rest become 0.
// valid = null means every entry. Runs on the calling thread.
void SoftmaxRows(float* s, int64_t rows, int64_t n, int64_t ld,
                 const std::function<int64_t(int64_t)>& valid = nullptr);

// Index of the first non-finite value among n, or -1.
int64_t FirstNonFinite(const float* values, int64_t n);

}  // namespace atp::kernels::cpu

#endif  // ATP_KERNELS_SRC_CPU_CPU_UTIL_H_
