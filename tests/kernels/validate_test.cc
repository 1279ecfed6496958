// Every kind of bad input to the CPU backend gets the specific status code and a message that
// names the offending value, and the backend keeps working afterwards.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "atp/kernels/backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "oracle.h"
#include "test_util.h"

namespace atp::kernels {
namespace {

using ::testing::HasSubstr;
using testing::ToTensor;

MATCHER_P2(StatusIs, code, substring, "") {
  if (arg.code() != code || !::testing::Matches(HasSubstr(substring))(std::string(arg.message()))) {
    *result_listener << "got " << arg;
    return false;
  }
  return true;
}

class ValidateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = CreateCpuBackend();
    testing::Rng rng(1);
    testing::AttentionShape shape;
    shape.d_model = 8;
    shape.heads = 2;
    shape.kv_heads = 1;
    shape.head_dim = 4;
    attention_spec_ = testing::RandomAttentionLayer(rng, shape).spec;
    linear_spec_ = testing::RandomLinearLayer(rng, 5, 12, true).spec;
    attention_ = *backend_->LoadLayer(testing::Clone(attention_spec_));
    linear_ = *backend_->LoadLayer(testing::Clone(linear_spec_));
    x_ = ToTensor(testing::RandomMat(rng, 4, 8));
    x12_ = ToTensor(testing::RandomMat(rng, 4, 12));
  }

  // A good call of every op still works: a bad request leaves nothing behind.
  void ExpectStillServing() {
    AtpAttentionArgs atp;
    atp.x = x_.view();
    atp.rank = RankPolicy::Fixed(2);
    EXPECT_TRUE(backend_->AtpAttention(*attention_, atp, {}).ok());
    LowRankLinearArgs lin;
    lin.x = x12_.view();
    lin.rank = RankPolicy::Fixed(2);
    EXPECT_TRUE(backend_->LowRankLinear(*linear_, lin, {}).ok());
  }

  absl::Status Decompose(const PrincipalBasesArgs& args) {
    return backend_->Decompose(args, {}).status();
  }
  absl::Status Atp(const AtpAttentionArgs& args, const LayerHandle* layer = nullptr) {
    return backend_->AtpAttention(layer ? *layer : *attention_, args, {}).status();
  }
  absl::Status Exact(const ExactAttentionArgs& args, const LayerHandle* layer = nullptr) {
    return backend_->ExactAttention(layer ? *layer : *attention_, args, {}).status();
  }
  absl::Status Linear(const LowRankLinearArgs& args, const LayerHandle* layer = nullptr) {
    return backend_->LowRankLinear(layer ? *layer : *linear_, args, {}).status();
  }

  std::unique_ptr<Backend> backend_;
  LayerSpec attention_spec_, linear_spec_;
  std::unique_ptr<LayerHandle> attention_, linear_;
  Tensor x_, x12_;
};

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

TEST_F(ValidateTest, DecomposeRejectsBadTensors) {
  PrincipalBasesArgs args;
  args.rank = RankPolicy::Fixed(1);
  const Tensor flat = ToTensor(std::vector<double>{1, 2, 3});
  args.x = flat.view();
  EXPECT_THAT(Decompose(args), StatusIs(kInvalid, "x has shape [3], want 2 dimensions"));
  TensorView empty{DType::kF32, {0, 4}, x_.data()};
  args.x = empty;
  EXPECT_THAT(Decompose(args), StatusIs(kInvalid, "x has shape [0,4], want every dimension >= 1"));
  args.x = TensorView{DType::kF32, {4, 8}, nullptr};
  EXPECT_THAT(Decompose(args), StatusIs(kInvalid, "x has no data"));
  args.x = TensorView{static_cast<DType>(9), {4, 8}, x_.data()};
  EXPECT_THAT(Decompose(args), StatusIs(kInvalid, "x has dtype 9, want f32 (1), f16 (2)"));
  ExpectStillServing();
}

TEST_F(ValidateTest, RejectsNonFiniteInputsOfEveryDtype) {
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (float bad : bad_values) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " " + std::to_string(bad));
      oracle::Mat m = testing::ToMat(x_);
      m(2, 3) = bad;  // flat index 19
      const Tensor x = ToTensor(m, dtype);
      PrincipalBasesArgs dec;
      dec.x = x.view();
      dec.rank = RankPolicy::Fixed(1);
      EXPECT_THAT(Decompose(dec),
                  StatusIs(kInvalid,
                           "x contains a non-finite value (NaN or infinity) at flat "
                           "index 19"));
      AtpAttentionArgs atp;
      atp.x = x.view();
      EXPECT_THAT(Atp(atp), StatusIs(kInvalid, "x contains a non-finite value"));
      ExactAttentionArgs exact;
      exact.x = x.view();
      EXPECT_THAT(Exact(exact), StatusIs(kInvalid, "at flat index 19"));
    }
  }
  ExpectStillServing();
}

TEST_F(ValidateTest, RejectsBadRankPoliciesAndLimits) {
  struct Case {
    RankPolicy policy;
    const char* message;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Case cases[] = {
      {RankPolicy::Fixed(0), "fixed rank is 0, want an integer >= 1"},
      {{RankPolicy::Kind::kFixed, 2.5, 0}, "fixed rank is 2.5, want an integer >= 1"},
      {RankPolicy::Fraction(0), "rank fraction is 0, want 0 < fraction <= 1"},
      {RankPolicy::Fraction(1.5), "rank fraction is 1.5"},
      {RankPolicy::Energy(0), "rank energy is 0, want 0 < energy <= 1"},
      {RankPolicy::Energy(nan), "rank energy is nan"},
      {RankPolicy::Energy(0.9, -1), "max rank is -1, want >= 0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    PrincipalBasesArgs dec;
    dec.x = x_.view();
    dec.rank = c.policy;
    EXPECT_THAT(Decompose(dec), StatusIs(kInvalid, c.message));
    AtpAttentionArgs atp;
    atp.x = x_.view();
    atp.rank = c.policy;
    EXPECT_THAT(Atp(atp), StatusIs(kInvalid, c.message));
    LowRankLinearArgs lin;
    lin.x = x12_.view();
    lin.rank = c.policy;
    EXPECT_THAT(Linear(lin), StatusIs(kInvalid, c.message));
  }
  PrincipalBasesArgs dec;
  dec.x = x_.view();
  dec.rank = RankPolicy::Fixed(1);
  dec.max_rank = -3;
  EXPECT_THAT(Decompose(dec), StatusIs(kInvalid, "backend max rank is -3, want >= 0"));
  dec.max_rank = 0;
  dec.method = static_cast<DecomposeMethod>(7);
  EXPECT_THAT(Decompose(dec), StatusIs(kInvalid, "decompose method is 7"));
  dec.method = DecomposeMethod::kAuto;
  dec.output_dtype = static_cast<DType>(0);
  EXPECT_THAT(Decompose(dec), StatusIs(kInvalid, "output dtype has dtype 0"));
  AtpAttentionArgs atp;
  atp.x = x_.view();
  atp.max_rank = -1;
  EXPECT_THAT(Atp(atp), StatusIs(kInvalid, "backend max rank is -1"));
  ExpectStillServing();
}

TEST_F(ValidateTest, AttentionRejectsWrongShapesAndLayers) {
  AtpAttentionArgs atp;
  atp.x = x12_.view();
  EXPECT_THAT(Atp(atp),
              StatusIs(kInvalid, "x has shape [4,12], want [L, 8] (d_model of the layer)"));
  ExactAttentionArgs exact;
  exact.x = x12_.view();
  EXPECT_THAT(Exact(exact), StatusIs(kInvalid, "x has shape [4,12], want [L, 8]"));
  const Tensor cube(DType::kF32, {2, 2, 8});
  exact.x = cube.view();
  EXPECT_THAT(Exact(exact), StatusIs(kInvalid, "x has shape [2,2,8], want 2 dimensions"));

  atp.x = x_.view();
  EXPECT_THAT(Atp(atp, linear_.get()),
              StatusIs(kInvalid, "layer is a linear layer, want an attention layer"));
  exact.x = x_.view();
  EXPECT_THAT(Exact(exact, linear_.get()),
              StatusIs(kInvalid, "layer is a linear layer, want an attention layer"));

  // A handle that another backend made.
  class ForeignLayer : public LayerHandle {
   public:
    const LayerSpec& spec() const override { return spec_; }
    uint64_t resident_bytes() const override { return 0; }
    LayerSpec spec_;
  } foreign;
  EXPECT_THAT(Atp(atp, &foreign), StatusIs(kInvalid, "not loaded by the cpu backend"));
  EXPECT_THAT(Exact(exact, &foreign), StatusIs(kInvalid, "not loaded by the cpu backend"));
  LowRankLinearArgs lin;
  lin.x = x12_.view();
  EXPECT_THAT(Linear(lin, &foreign), StatusIs(kInvalid, "not loaded by the cpu backend"));
  exact.output_dtype = static_cast<DType>(4);
  EXPECT_THAT(Exact(exact), StatusIs(kInvalid, "output dtype has dtype 4"));
  ExpectStillServing();
}

TEST_F(ValidateTest, LowRankLinearRejectsUnknownWeightsAndBadFactors) {
  LowRankLinearArgs lin;
  lin.x = x12_.view();
  lin.weight = "w_proj";
  EXPECT_THAT(Linear(lin), StatusIs(absl::StatusCode::kNotFound,
                                    "layer has no linear weight \"w_proj.weight\""));
  lin.weight = "";
  EXPECT_THAT(Linear(lin, attention_.get()),
              StatusIs(absl::StatusCode::kNotFound, "layer has no linear weight \"weight\""));
  lin.weight = "q_proj";
  lin.x = x12_.view();
  EXPECT_THAT(Linear(lin, attention_.get()),
              StatusIs(kInvalid, "x has shape [4,12], want [L, 8] (in_features of q_proj.weight)"));
  lin.weight = "";
  lin.x = x_.view();
  EXPECT_THAT(Linear(lin), StatusIs(kInvalid,
                                    "x has shape [4,8], want [L, 12] (in_features of "
                                    "weight)"));

  testing::Rng rng(2);
  const Tensor u = ToTensor(testing::RandomMat(rng, 6, 4));
  const Tensor c = ToTensor(testing::RandomMat(rng, 4, 12));
  const Tensor c_bad = ToTensor(testing::RandomMat(rng, 3, 12));
  const Tensor u_flat = ToTensor(std::vector<double>{1, 2});
  LowRankLinearArgs f;
  f.factored_input = true;
  f.u = u.view();
  f.c = c_bad.view();
  EXPECT_THAT(Linear(f), StatusIs(kInvalid,
                                  "c has shape [3,12], want [4, 12] (rank of u [6,4], "
                                  "in_features of weight)"));
  f.u = u_flat.view();
  EXPECT_THAT(Linear(f), StatusIs(kInvalid, "u has shape [2], want 2 dimensions"));
  f.u = u.view();
  f.c = c.view();
  f.max_rank = 2;
  EXPECT_THAT(Linear(f), StatusIs(kInvalid, "factored input has rank 4, want <= the max rank 2"));
  f.max_rank = 0;
  oracle::Mat nan_c = testing::ToMat(c);
  nan_c(3, 11) = std::numeric_limits<double>::quiet_NaN();
  const Tensor c_nan = ToTensor(nan_c, DType::kBF16);
  f.c = c_nan.view();
  EXPECT_THAT(Linear(f), StatusIs(kInvalid,
                                  "c contains a non-finite value (NaN or infinity) at "
                                  "flat index 47"));
  f.c = c.view();
  EXPECT_TRUE(Linear(f).ok());
  ExpectStillServing();
}

TEST_F(ValidateTest, LoadLayerRejectsBadSpecs) {
  {
    LayerSpec spec = testing::Clone(attention_spec_);
    spec.weights.erase("q_proj.weight");
    EXPECT_THAT(backend_->LoadLayer(std::move(spec)).status(),
                StatusIs(kInvalid, "layer is missing q_proj.weight, want shape [8,8]"));
  }
  {
    LayerSpec spec = testing::Clone(attention_spec_);
    spec.weights.insert_or_assign("k_proj.weight", Tensor(DType::kF32, {8, 8}));
    EXPECT_THAT(backend_->LoadLayer(std::move(spec)).status(),
                StatusIs(kInvalid, "k_proj.weight has shape [8,8], want [4,8]"));
  }
  {
    LayerSpec spec = testing::Clone(attention_spec_);
    spec.weights.emplace("gate_proj.weight", Tensor(DType::kF32, {8, 8}));
    EXPECT_THAT(backend_->LoadLayer(std::move(spec)).status(),
                StatusIs(kInvalid, "layer has an unknown tensor \"gate_proj.weight\""));
  }
  {
    LayerSpec spec = testing::Clone(attention_spec_);
    spec.attention.num_kv_heads = 3;
    EXPECT_THAT(backend_->LoadLayer(std::move(spec)).status(),
                StatusIs(kInvalid, "num_kv_heads is 3, want a divisor of num_heads 2"));
  }
  {
    LayerSpec spec = testing::Clone(attention_spec_);
    oracle::Mat w = testing::ToMat(spec.weights.at("v_proj.weight"));
    w(1, 1) = std::numeric_limits<double>::infinity();
    spec.weights.insert_or_assign("v_proj.weight", ToTensor(w, DType::kF16));
    EXPECT_THAT(backend_->LoadLayer(std::move(spec)).status(),
                StatusIs(kInvalid, "v_proj.weight contains a non-finite value"));
  }
  {
    LayerSpec spec = testing::Clone(linear_spec_);
    spec.weights.insert_or_assign("bias", Tensor(DType::kF32, {4}));
    EXPECT_THAT(backend_->LoadLayer(std::move(spec)).status(),
                StatusIs(kInvalid, "bias has shape [4], want [5]"));
  }
  {
    LayerSpec spec = testing::Clone(linear_spec_);
    spec.weights.erase("weight");
    EXPECT_THAT(backend_->LoadLayer(std::move(spec)).status(),
                StatusIs(kInvalid, "linear layer is missing weight"));
  }
  ExpectStillServing();
}

TEST_F(ValidateTest, OverflowingValuesGiveAnErrorNotNaN) {
  // Finite inputs whose products overflow f32.
  oracle::Mat big = testing::ToMat(x_);
  for (double& v : big.v) v *= 1e37;
  const Tensor x = ToTensor(big);
  ExactAttentionArgs exact;
  exact.x = x.view();
  EXPECT_THAT(Exact(exact), StatusIs(kInvalid, "exact attention overflowed f32"));
  ExpectStillServing();
}

}  // namespace
}  // namespace atp::kernels
