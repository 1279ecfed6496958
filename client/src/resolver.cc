#include "resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace atp::client::internal {

bool IsDnsTarget(absl::string_view target) { return absl::StartsWith(target, "dns:"); }

absl::StatusOr<DnsTarget> ParseDnsTarget(absl::string_view target) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("target \"", target, "\" ", why, ", want dns:///HOST:PORT"));
  };
  absl::string_view rest = target;
  if (!absl::ConsumePrefix(&rest, "dns:")) return bad("is not a dns: target");
  if (absl::ConsumePrefix(&rest, "//")) {
    const size_t slash = rest.find('/');
    if (slash == absl::string_view::npos) return bad("has no path after the authority");
    rest.remove_prefix(slash + 1);
  }
  DnsTarget out;
  if (absl::ConsumePrefix(&rest, "[")) {  // [v6]:port
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos) return bad("has an unterminated [");
    out.host = std::string(rest.substr(0, close));
    rest.remove_prefix(close + 1);
    if (!absl::ConsumePrefix(&rest, ":")) return bad("has no port");
    out.port = std::string(rest);
  } else {
    const size_t colon = rest.rfind(':');
    if (colon == absl::string_view::npos) return bad("has no port");
    out.host = std::string(rest.substr(0, colon));
    out.port = std::string(rest.substr(colon + 1));
  }
  int port = 0;
  if (out.host.empty()) return bad("has no host");
  if (!absl::SimpleAtoi(out.port, &port) || port < 1 || port > 65535) {
    return bad("has no valid port");
  }
  return out;
}

absl::StatusOr<std::vector<ResolvedAddress>> Resolve(const DnsTarget& target) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(target.host.c_str(), target.port.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", target.host, ": ", gai_strerror(rc)));
  }
  std::vector<ResolvedAddress> out;
  for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    char ip[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET) {
      const auto* sa = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
      out.push_back(
          {absl::StrCat("ipv4:", ip, ":", target.port), absl::StrCat(ip, ":", target.port)});
    } else if (ai->ai_family == AF_INET6) {
      const auto* sa = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      inet_ntop(AF_INET6, &sa->sin6_addr, ip, sizeof ip);
      out.push_back({absl::StrCat("ipv6:[", ip, "]:", target.port),
                     absl::StrCat("[", ip, "]:", target.port)});
    }
  }
  freeaddrinfo(result);
  std::sort(out.begin(), out.end(), [](const ResolvedAddress& a, const ResolvedAddress& b) {
    return a.display < b.display;
  });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const ResolvedAddress& a, const ResolvedAddress& b) {
                          return a.display == b.display;
                        }),
            out.end());
  if (out.empty()) {
    return absl::UnavailableError(absl::StrCat(target.host, " has no IPv4 or IPv6 address"));
  }
  return out;
}

}  // namespace atp::client::internal
