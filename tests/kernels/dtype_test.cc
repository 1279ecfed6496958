// f16/bf16 ↔ f32 conversions: exhaustive round trips, round-to-nearest-even against an
// independent nearest-value search, subnormals, infinities, NaN, overflow; CheckFinite per dtype.
#include "atp/kernels/dtype.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "atp/kernels/tensor.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace atp::kernels {
namespace {

using testing::FreshSeed;
using testing::SeedTrace;

bool IsNanHalf(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
bool IsNanBf16(uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x7fu) != 0; }

TEST(DTypeTest, NamesSizesAndParsing) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeName(DType::kBF16), "bf16");
  EXPECT_EQ(*ParseDType("float16"), DType::kF16);
  EXPECT_EQ(*ParseDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("f32"), DType::kF32);
  EXPECT_EQ(ParseDType("int8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDType("int8").status().message(), "unknown dtype \"int8\", want f32, f16 or bf16");
}

TEST(DTypeTest, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float f = HalfToFloat(h);
    if (IsNanHalf(h)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << bits;
      EXPECT_TRUE(IsNanHalf(FloatToHalf(f))) << std::hex << bits;
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), h) << std::hex << bits;
  }
}

TEST(DTypeTest, EveryBFloat16RoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto b = static_cast<uint16_t>(bits);
    const float f = BFloat16ToFloat(b);
    EXPECT_EQ(std::bit_cast<uint32_t>(f), bits << 16);
    if (IsNanBf16(b)) {
      EXPECT_TRUE(IsNanBf16(FloatToBFloat16(f))) << std::hex << bits;
      continue;
    }
    ASSERT_EQ(FloatToBFloat16(f), b) << std::hex << bits;
  }
}

TEST(DTypeTest, HalfValuesOfKnownPatterns) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));         // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x03ff), 1023 * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));         // smallest normal
  EXPECT_EQ(HalfToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
}

TEST(DTypeTest, FloatToHalfRoundsTiesToEvenAndOverflowsToInfinity) {
  // Ties between neighbours: the one with an even mantissa wins.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // 1 + ½ulp → 1
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // 1 + 1½ulp → 1 + 2ulp
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);             // ½ smallest subnormal → 0
  EXPECT_EQ(FloatToHalf(3 * std::ldexp(1.0f, -25)), 0x0002);         // 1½ → 2 subnormal ulps
  EXPECT_EQ(FloatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -30)), 0x8000);
  // The subnormal/normal boundary rounds up into the smallest normal.
  EXPECT_EQ(FloatToHalf(std::nextafter(std::ldexp(1.0f, -14), 0.0f)), 0x0400);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.996f), 0x7bff);  // below the halfway point to 65536
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);    // the tie rounds to even: infinity
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(IsNanHalf(FloatToHalf(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload sits only in the low f32 bits must not become infinity.
  EXPECT_TRUE(IsNanHalf(FloatToHalf(std::bit_cast<float>(0x7f800001u))));
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(DTypeTest, FloatToBFloat16RoundsTiesToEven) {
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie → even (1)
  EXPECT_EQ(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie → even
  EXPECT_EQ(FloatToBFloat16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to infinity
  EXPECT_EQ(FloatToBFloat16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(IsNanBf16(FloatToBFloat16(std::bit_cast<float>(0x7f800001u))));
  EXPECT_TRUE(IsNanBf16(FloatToBFloat16(std::bit_cast<float>(0xffc00000u))));
  // f32 subnormals: bf16 has the same exponent range, so they round within the subnormals.
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x00018000u)), 0x0002);  // tie → even
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x00010001u)), 0x0001);
}

// The nearest representable value, by search over the candidates: the conversion must pick it,
// and on a tie the even one.
TEST(DTypeTest, ConversionsPickTheNearestValueOnRandomFloats) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 200000; ++i) {
    // Random sign, 23 mantissa bits and exponent in [-26, 15]: the half range, its subnormals
    // and below.
    const uint32_t sign = static_cast<uint32_t>(rng() & 1u) << 31;
    const uint32_t exponent = static_cast<uint32_t>(127 - 26 + rng() % 42) << 23;
    const uint32_t mantissa = static_cast<uint32_t>(rng()) & 0x7fffffu;
    const float f = std::bit_cast<float>(sign | exponent | mantissa);
    if (std::abs(f) >= 65504.0f) continue;
    const uint16_t h = FloatToHalf(f);
    const double err = std::abs(double(HalfToFloat(h)) - f);
    for (int delta : {-1, 1}) {
      const uint16_t n = static_cast<uint16_t>(h + delta);
      if (IsNanHalf(n) || (n & 0x7fffu) == 0x7c00u || ((n ^ h) & 0x8000u)) continue;
      const double other = std::abs(double(HalfToFloat(n)) - f);
      ASSERT_LE(err, other) << f;
      if (err == other) {
        ASSERT_EQ(h & 1u, 0u) << "tie not to even: " << f;
      }
    }
    const uint16_t b = FloatToBFloat16(f);
    const double berr = std::abs(double(BFloat16ToFloat(b)) - f);
    for (int delta : {-1, 1}) {
      const uint16_t n = static_cast<uint16_t>(b + delta);
      if (IsNanBf16(n) || ((n ^ b) & 0x8000u)) continue;
      const double other = std::abs(double(BFloat16ToFloat(n)) - f);
      ASSERT_LE(berr, other) << f;
      if (berr == other) {
        ASSERT_EQ(b & 1u, 0u) << "tie not to even: " << f;
      }
    }
  }
}

TEST(DTypeTest, ArrayConversionsAndTensorCopies) {
  const std::vector<float> values = {0.0f, -1.5f, 3.14159f, 65504.0f, 1e-6f, -0.0f};
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    std::vector<uint8_t> buffer(values.size() * DTypeSize(dtype));
    ConvertFromF32(values.data(), dtype, buffer.data(), values.size());
    std::vector<float> back(values.size());
    ConvertToF32(dtype, buffer.data(), back.data(), values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      const float want = dtype == DType::kF16    ? HalfToFloat(FloatToHalf(values[i]))
                         : dtype == DType::kBF16 ? BFloat16ToFloat(FloatToBFloat16(values[i]))
                                                 : values[i];
      EXPECT_EQ(back[i], want) << DTypeName(dtype) << " " << i;
    }
    const Tensor t = Tensor::FromF32({2, 3}, values);
    const Tensor converted = Tensor::CopyOf(t.view(), dtype);
    EXPECT_EQ(converted.byte_size(), 6 * DTypeSize(dtype));
    const Tensor again = Tensor::CopyOf(converted.view(), DType::kF32);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(again.data_as<float>()[i], back[i]);
  }
  // f16 → bf16 goes through f32.
  const Tensor h =
      Tensor::CopyOf(Tensor::FromF32({1}, std::vector<float>{0.1f}).view(), DType::kF16);
  const Tensor b = Tensor::CopyOf(h.view(), DType::kBF16);
  EXPECT_EQ(b.data_as<uint16_t>()[0], FloatToBFloat16(HalfToFloat(h.data_as<uint16_t>()[0])));
}

TEST(DTypeTest, CheckFiniteFindsTheFirstBadElementOfEveryDtype) {
  const std::vector<float> values = {1, 2, std::numeric_limits<float>::infinity(), 4,
                                     std::numeric_limits<float>::quiet_NaN()};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const Tensor t = Tensor::CopyOf(Tensor::FromF32({5}, values).view(), dtype);
    const absl::Status s = CheckFinite(t.view(), "w");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(),
              "w contains a non-finite value (NaN or infinity) at flat index 2, want finite");
  }
  // Large finite values and subnormals are fine.
  const Tensor ok =
      Tensor::FromF32({3}, std::vector<float>{std::numeric_limits<float>::max(),
                                              std::numeric_limits<float>::denorm_min(), -0.0f});
  EXPECT_TRUE(CheckFinite(ok.view(), "w").ok());
}

}  // namespace
}  // namespace atp::kernels
