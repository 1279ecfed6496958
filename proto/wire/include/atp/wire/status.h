// Status translation between absl::Status (every atp module), grpc::Status (a stream's or a call's
// own status) and the in-band google.rpc.Code + message of a ResponseHeader. The numeric codes of
// all three are the same google.rpc.Code values. Thread-safe: pure functions.
#ifndef ATP_WIRE_STATUS_H_
#define ATP_WIRE_STATUS_H_

#include <grpcpp/support/status.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace atp::wire {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// An in-band status (ResponseHeader.code and .message) as absl::Status. A code outside
// google.rpc.Code becomes UNKNOWN with the number in the message.
absl::Status StatusFromCode(int32_t code, absl::string_view message);

// "INVALID_ARGUMENT" for absl::StatusCode::kInvalidArgument, as google.rpc.Code spells it.
std::string StatusCodeName(absl::StatusCode code);

}  // namespace atp::wire

#endif  // ATP_WIRE_STATUS_H_
