#include "atp/kernels/rank_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace atp::kernels {

std::string RankPolicyString(const RankPolicy& policy) {
  std::string s;
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      s = absl::StrCat("fixed ", static_cast<int64_t>(policy.value));
      break;
    case RankPolicy::Kind::kFraction:
      s = absl::StrCat("fraction ", policy.value);
      break;
    case RankPolicy::Kind::kEnergy:
      s = absl::StrCat("energy ", policy.value);
      break;
  }
  if (policy.max_rank > 0) absl::StrAppend(&s, " max ", policy.max_rank);
  return s;
}

absl::Status ValidateRankPolicy(const RankPolicy& policy) {
  if (policy.max_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max rank is ", policy.max_rank, ", want >= 0 (0 = no bound)"));
  }
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      if (!(policy.value >= 1) || policy.value != std::floor(policy.value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("fixed rank is ", policy.value, ", want an integer >= 1"));
      }
      return absl::OkStatus();
    case RankPolicy::Kind::kFraction:
      if (!(policy.value > 0 && policy.value <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank fraction is ", policy.value, ", want 0 < fraction <= 1"));
      }
      return absl::OkStatus();
    case RankPolicy::Kind::kEnergy:
      if (!(policy.value > 0 && policy.value <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank energy is ", policy.value, ", want 0 < energy <= 1"));
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown rank policy kind");
}

int64_t RankUpperBound(const RankPolicy& policy, int64_t length, int64_t width,
                       int64_t backend_max_rank) {
  int64_t bound = std::min(length, width);
  if (policy.max_rank > 0) bound = std::min(bound, policy.max_rank);
  if (backend_max_rank > 0) bound = std::min(bound, backend_max_rank);
  return std::max<int64_t>(bound, 1);
}

int64_t ResolveRank(const RankPolicy& policy, int64_t length, int64_t width,
                    int64_t backend_max_rank, absl::Span<const double> sigma_sq,
                    double total_energy) {
  const int64_t bound = RankUpperBound(policy, length, width, backend_max_rank);
  int64_t r = bound;
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      r = static_cast<int64_t>(policy.value);
      break;
    case RankPolicy::Kind::kFraction:
      // Guard against 0.25 * 1024 = 256.00000000000003 rounding up to 257.
      r = static_cast<int64_t>(std::ceil(policy.value * static_cast<double>(length) - 1e-9));
      break;
    case RankPolicy::Kind::kEnergy: {
      const double want = policy.value * total_energy;
      double acc = 0.0;
      r = static_cast<int64_t>(sigma_sq.size());
      for (size_t i = 0; i < sigma_sq.size(); ++i) {
        acc += sigma_sq[i];
        if (acc >= want) {
          r = static_cast<int64_t>(i) + 1;
          break;
        }
      }
      if (acc < want) r = bound;
      break;
    }
  }
  return std::clamp<int64_t>(r, 1, bound);
}

}  // namespace atp::kernels
