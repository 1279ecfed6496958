// Resolution of dns:/// targets for the Pool: "dns:///host:port" (or "dns://authority/host:port",
// the authority being ignored) into one gRPC target per address ("ipv4:10.0.0.7:50051",
// "ipv6:[fd00::7]:50051"), with getaddrinfo (the system resolver, which is what Kubernetes
// configures in a pod). Thread-safe: pure functions (getaddrinfo may block).
#ifndef ATP_CLIENT_SRC_RESOLVER_H_
#define ATP_CLIENT_SRC_RESOLVER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atp::client::internal {

struct DnsTarget {
  std::string host;
  std::string port;
};

// Whether `target` is a dns: target.
bool IsDnsTarget(absl::string_view target);

// Parses a dns: target. INVALID_ARGUMENT naming it when it has no host or port.
absl::StatusOr<DnsTarget> ParseDnsTarget(absl::string_view target);

struct ResolvedAddress {
  // gRPC target of this one address.
  std::string grpc_target;
  // "10.0.0.7:50051" or "[fd00::7]:50051", for people.
  std::string display;
};

// The addresses of `target`, sorted and without duplicates. UNAVAILABLE naming the host when it
// does not resolve.
absl::StatusOr<std::vector<ResolvedAddress>> Resolve(const DnsTarget& target);

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_RESOLVER_H_
