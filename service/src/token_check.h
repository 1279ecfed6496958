// The bearer-token check: every atp.v1.Worker call carries "authorization: Bearer <token>".
//
// The token is kept only as its SHA-256, and presented tokens are hashed and compared in constant
// time, so neither the comparison time nor a length difference leaks the token. Thread-safe:
// immutable after construction.
#ifndef ATP_SERVICE_TOKEN_CHECK_H_
#define ATP_SERVICE_TOKEN_CHECK_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atp::service {

class TokenCheck {
 public:
  // The token in `path`, without surrounding whitespace. NOT_FOUND / PERMISSION_DENIED when the
  // file cannot be read, INVALID_ARGUMENT when it holds no token or whitespace inside it.
  static absl::StatusOr<TokenCheck> FromFile(const std::string& path);
  // INVALID_ARGUMENT for an empty token or one with whitespace or control characters.
  static absl::StatusOr<TokenCheck> FromToken(absl::string_view token);

  // OK when `authorization` (the metadata value, nullopt when absent) is "Bearer <token>" with the
  // right token (the scheme is case-insensitive). UNAUTHENTICATED with a message saying which of
  // missing / malformed / wrong it was otherwise; the message never contains the token.
  absl::Status Check(std::optional<absl::string_view> authorization) const;

 private:
  explicit TokenCheck(const std::array<uint8_t, 32>& digest) : digest_(digest) {}
  std::array<uint8_t, 32> digest_;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_TOKEN_CHECK_H_
