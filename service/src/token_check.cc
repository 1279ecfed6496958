#include "token_check.h"

#include <openssl/crypto.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "atp/wire/layer_digest.h"

namespace atp::service {
namespace {

std::array<uint8_t, 32> Hash(absl::string_view s) {
  wire::Sha256 sha;
  sha.Update(s);
  return sha.Finish();
}

}  // namespace

absl::StatusOr<TokenCheck> TokenCheck::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string why = absl::StrCat("cannot read token file ", path, ": ", std::strerror(err));
    return err == EACCES ? absl::PermissionDeniedError(why) : absl::NotFoundError(why);
  }
  std::stringstream buf;
  buf << in.rdbuf();
  auto check = FromToken(absl::StripAsciiWhitespace(buf.str()));
  if (!check.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": ", check.status().message()));
  }
  return check;
}

absl::StatusOr<TokenCheck> TokenCheck::FromToken(absl::string_view token) {
  if (token.empty()) return absl::InvalidArgumentError("the token is empty");
  for (char c : token) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          "the token contains whitespace or a control character, want one printable word");
    }
  }
  return TokenCheck(Hash(token));
}

absl::Status TokenCheck::Check(std::optional<absl::string_view> authorization) const {
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "missing \"authorization: Bearer <token>\" metadata; this worker requires a token");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError(
        "authorization metadata is not of the form \"Bearer <token>\"");
  }
  const auto presented = Hash(absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size())));
  if (CRYPTO_memcmp(presented.data(), digest_.data(), digest_.size()) != 0) {
    return absl::UnauthenticatedError("wrong bearer token");
  }
  return absl::OkStatus();
}

}  // namespace atp::service
