// Small helpers of the CPU backend: f32 views of inputs, outputs in any dtype, row-major GEMM and a
// parallel loop. Private to kernels/src/cpu/.
#ifndef ATP_KERNELS_SRC_CPU_CPU_UTIL_H_
#define ATP_KERNELS_SRC_CPU_CPU_UTIL_H_

#include <cstdint>
#include <functional>
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

// An f32 buffer of n elements, NaN-filled when env.poison, else zero-filled.
std::vector<float> NewBuffer(const CpuEnv& env, int64_t n);

// A tensor of `dtype` holding `values` (f32, rows × cols with leading dimension `ld`).
Tensor ToTensor(const float* values, int64_t rows, int64_t cols, int64_t ld, DType dtype);
Tensor ToTensor(const std::vector<float>& values, Shape shape, DType dtype);

// C[m×n] = alpha·op(A)·op(B) + beta·C, row-major (cblas_sgemm).
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Y[rows×n] = X[rows×d]·Wᵀ + 1·bᵀ, the nn.Linear map; bias may be null. ldy = n.
void Linear(const float* x, int64_t rows, int64_t d, const float* w, int64_t n, const float* bias,
            float* y);

// Runs fn(begin, end) over [0, n) split into at most `threads` contiguous ranges, on the calling
// thread and threads - 1 new ones. Blocks until every range is done.
void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn);

// Row-wise softmax in place of rows × n values (leading dimension ld), with the row maximum
// subtracted; the first `valid(i)` entries of row i take part and the rest become 0. valid = null
// means every entry. Rows are split over env.threads.
void SoftmaxRows(float* s, int64_t rows, int64_t n, int64_t ld, const CpuEnv& env,
                 const std::function<int64_t(int64_t)>& valid = nullptr);

}  // namespace atp::kernels::cpu

#endif  // ATP_KERNELS_SRC_CPU_CPU_UTIL_H_
