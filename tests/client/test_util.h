// Helpers of the client tests: random layers built twice (as a client LayerSpec for the worker and
// as a kernels LayerSpec for the in-process CPU backend that is the reference), comparisons.
#ifndef ATP_TESTS_CLIENT_TEST_UTIL_H_
#define ATP_TESTS_CLIENT_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "atp/client/layer.h"
#include "atp/client/tensor.h"
#include "atp/kernels/backend.h"
#include "atp/kernels/layer.h"

namespace atp::testing {

// Uniform values in [-scale, scale].
std::vector<float> RandomValues(int64_t n, uint64_t seed, float scale = 1.0f);

// A sequence that is nearly low-rank: `components` directions plus a little noise, L x d.
std::vector<float> LowRankSequence(int64_t length, int64_t width, int components, uint64_t seed);

// Weights of a layer, by name, with shapes.
struct Weights {
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, std::vector<int64_t>> shapes;
};

struct AttentionShape {
  int64_t d_model = 32;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t head_dim = 8;
  bool bias = true;
};

Weights RandomAttentionWeights(const AttentionShape& shape, uint64_t seed);
Weights RandomLinearWeights(int64_t out, int64_t in, bool bias, uint64_t seed);

client::LayerSpec ClientAttention(const std::string& id, const AttentionShape& shape,
                                  const Weights& w);
kernels::LayerSpec KernelAttention(const AttentionShape& shape, const Weights& w);
client::LayerSpec ClientLinear(const std::string& id, const Weights& w);
kernels::LayerSpec KernelLinear(const Weights& w);

// The in-process reference: the CPU backend with one thread (as the test workers run).
kernels::Backend& LocalBackend();

// Views and copies.
kernels::TensorView KernelView(const std::vector<float>& v, std::vector<int64_t> shape);
client::TensorView ClientView(const std::vector<float>& v, std::vector<int64_t> shape);
std::vector<float> Floats(const client::Tensor& t);
std::vector<float> Floats(const kernels::Tensor& t);

// max |a - b| / max |b| (inf for size mismatches).
double RelativeMaxError(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace atp::testing

#endif  // ATP_TESTS_CLIENT_TEST_UTIL_H_
