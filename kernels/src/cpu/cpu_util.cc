#include "cpu/cpu_util.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

namespace atp::kernels::cpu {

F32Input::F32Input(const TensorView& view) {
  if (view.dtype == DType::kF32) {
    data_ = static_cast<const float*>(view.data);
    return;
  }
  owned_.resize(static_cast<size_t>(view.num_elements()));
  ConvertToF32(view.dtype, view.data, owned_.data(), owned_.size());
  data_ = owned_.data();
}

Buffer NewBuffer(const CpuEnv& env, int64_t n) {
  Buffer buffer = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(n));
  if (env.poison) std::fill_n(buffer.get(), n, std::numeric_limits<float>::quiet_NaN());
  return buffer;
}

Tensor ToTensor(const float* values, int64_t rows, int64_t cols, int64_t ld, DType dtype) {
  Tensor t(dtype, {rows, cols});
  const size_t elem = DTypeSize(dtype);
  auto* out = static_cast<std::byte*>(t.data());
  for (int64_t i = 0; i < rows; ++i) {
    ConvertFromF32(values + i * ld, dtype, out + static_cast<size_t>(i * cols) * elem,
                   static_cast<size_t>(cols));
  }
  return t;
}

Tensor ToTensor(const float* values, Shape shape, DType dtype) {
  Tensor t(dtype, std::move(shape));
  ConvertFromF32(values, dtype, t.data(), static_cast<size_t>(t.num_elements()));
  return t;
}

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void ParallelGemm(const CpuEnv& env, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                  float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                  float* c, int64_t ldc) {
  // Below about 2^22 multiply-adds a thread costs more than it saves.
  constexpr int64_t kMinParallelWork = int64_t{1} << 22;
  // Split points on multiples of 16 keep the GEMM kernels' panels whole.
  constexpr int64_t kAlign = 16;
  const int threads = env.threads;
  if (threads <= 1 || m * n * k < kMinParallelWork || std::max(m, n) < 2 * kAlign) {
    Gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  const int64_t chunk = ((extent + threads - 1) / threads + kAlign - 1) / kAlign * kAlign;
  ParallelFor((extent + chunk - 1) / chunk, threads, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      const int64_t lo = part * chunk;
      const int64_t len = std::min(chunk, extent - lo);
      if (split_rows) {  // rows lo.. of op(A) and C
        Gemm(trans_a, trans_b, len, n, k, alpha, trans_a ? a + lo : a + lo * lda, lda, b, ldb, beta,
             c + lo * ldc, ldc);
      } else {  // columns lo.. of op(B) and C
        Gemm(trans_a, trans_b, m, len, k, alpha, a, lda, trans_b ? b + lo * ldb : b + lo, ldb, beta,
             c + lo, ldc);
      }
    }
  });
}

void Linear(const CpuEnv& env, const float* x, int64_t rows, int64_t d, const float* w, int64_t n,
            const float* bias, float* y) {
  float beta = 0.0f;
  if (bias != nullptr) {
    // Seed every row with the bias and let the GEMM accumulate onto it.
    for (int64_t i = 0; i < rows; ++i) std::memcpy(y + i * n, bias, sizeof(float) * n);
    beta = 1.0f;
  }
  ParallelGemm(env, false, true, rows, n, d, 1.0f, x, d, w, d, beta, y, n);
}

void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t parts = std::clamp<int64_t>(threads, 1, std::max<int64_t>(n, 1));
  if (parts <= 1) {
    if (n > 0) fn(0, n);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(parts - 1));
  const int64_t step = (n + parts - 1) / parts;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t begin = p * step;
    const int64_t end = std::min(n, begin + step);
    if (begin >= end) break;
    workers.emplace_back([&fn, begin, end] { fn(begin, end); });
  }
  fn(0, std::min(n, step));
  for (std::thread& t : workers) t.join();
}

void ParallelForDynamic(int64_t n, int threads, const std::function<void(int, int64_t)>& fn) {
  const int workers = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(n, 1)));
  std::atomic<int64_t> next{0};
  auto work = [&](int worker) {
    for (int64_t task = next++; task < n; task = next++) fn(worker, task);
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (std::thread& t : pool) t.join();
}

int64_t FirstNonFinite(const float* values, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return -1;
}

namespace {

// exp(−y) for y >= 0 in f32, written so that the compiler vectorises it (no float compares, no
// calls): 2^n·exp(t) with n = round(−y/ln 2), t = −y − n·ln 2 in [−ln2/2, ln2/2], exp(t) by its
// Taylor series to degree 7 (truncation below 1e-8; measured error about 2 ulp). y is clamped to
// 87 through an integer min on its bit pattern (non-negative floats order like their bits),
// giving ≈ 1e-38 instead of an underflow to 0: never visible next to the row maximum's exp(0) = 1.
[[gnu::always_inline]] inline float ExpNegated(float y) {
  constexpr float kLog2e = 1.44269504088896341f;
  // ln 2 split so that n·kLn2Hi is exact for |n| < 2^12.
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.428606765330187045e-06f;
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: (v + kRound) − kRound rounds v to an integer
  constexpr int32_t kMaxBits = 0x42ae0000;  // 87.0f
  int32_t bits = __builtin_bit_cast(int32_t, y);
  bits = bits < kMaxBits ? bits : kMaxBits;
  const float x = -__builtin_bit_cast(float, bits);
  const float n = (x * kLog2e + kRound) - kRound;
  const float t = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * t + 1.0f / 720.0f;
  p = p * t + 1.0f / 120.0f;
  p = p * t + 1.0f / 24.0f;
  p = p * t + 1.0f / 6.0f;
  p = p * t + 0.5f;
  p = p * t + 1.0f;
  p = p * t + 1.0f;
  const int32_t scale = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n >= -126
  return p * __builtin_bit_cast(float, scale);
}

// One softmax row. Compiled for AVX-512, AVX2 and baseline x86-64, picked at load time: the exp
// loop is most of the work of exact attention outside the GEMMs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void SoftmaxRow(float* row, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max)
  for (int64_t j = 0; j < n; ++j) max = row[j] > max ? row[j] : max;
  if (!std::isfinite(max)) {
    // The scores overflowed f32: keep the damage visible (the op's output check reports it).
    std::fill(row, row + n, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float e = ExpNegated(max - row[j]);
    row[j] = e;
    sum += e;
  }
  // sum >= 1: the maximum contributes exp(0) = 1.
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
}

}  // namespace

void SoftmaxRows(float* s, int64_t rows, int64_t n, int64_t ld,
                 const std::function<int64_t(int64_t)>& valid) {
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * ld;
    const int64_t count = valid ? std::clamp<int64_t>(valid(i), 1, n) : n;
    SoftmaxRow(row, count);
    std::fill(row + count, row + n, 0.0f);
  }
}

}  // namespace atp::kernels::cpu
