// Rank policies: how many principal bases r a decomposition keeps (DESIGN.md §1).
//
// Thread-safe: plain values and pure functions.
#ifndef ATP_KERNELS_RANK_POLICY_H_
#define ATP_KERNELS_RANK_POLICY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace atp::kernels {

struct RankPolicy {
  enum class Kind {
    kFixed,     // r = value
    kFraction,  // r = ceil(value · L), 0 < value <= 1
    kEnergy,    // smallest r with Σ_{i<=r} σ_i² >= value · ||X||_F², 0 < value <= 1
  };
  Kind kind = Kind::kEnergy;
  double value = 0.99;
  // Upper bound on r; 0 means none beyond min(L, d).
  int64_t max_rank = 0;

  static RankPolicy Fixed(int64_t r, int64_t max_rank = 0) {
    return {Kind::kFixed, static_cast<double>(r), max_rank};
  }
  static RankPolicy Fraction(double f, int64_t max_rank = 0) {
    return {Kind::kFraction, f, max_rank};
  }
  static RankPolicy Energy(double tau, int64_t max_rank = 0) {
    return {Kind::kEnergy, tau, max_rank};
  }
};

// "fixed 64", "fraction 0.25", "energy 0.99", with " max 128" when bounded.
std::string RankPolicyString(const RankPolicy& policy);

// INVALID_ARGUMENT unless the value fits the kind (fixed >= 1, fraction and energy in (0, 1]) and
// max_rank >= 0.
absl::Status ValidateRankPolicy(const RankPolicy& policy);

// The largest r the policy can give for an L×d input: min(L, d, max_rank if > 0, backend_max if >
// 0). Always >= 1.
int64_t RankUpperBound(const RankPolicy& policy, int64_t length, int64_t width,
                       int64_t backend_max_rank);

// Resolves r for an L×d input. `sigma_sq` holds the leading squared singular values in descending
// order (at least RankUpperBound(...) of them for the energy policy, fewer allowed for the others)
// and `total_energy` is ||X||_F². The result is clipped to [1, RankUpperBound(...)].
int64_t ResolveRank(const RankPolicy& policy, int64_t length, int64_t width,
                    int64_t backend_max_rank, absl::Span<const double> sigma_sq,
                    double total_energy);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_RANK_POLICY_H_
