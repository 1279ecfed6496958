// Small helpers for the raw (ByteBuffer) callback handlers of the worker: reading a received
// buffer as pieces, (de)serializing headers, the bearer-token check from call metadata.
// Included only by the service's gRPC translation units. Thread-safe: pure functions.
#ifndef ATP_SERVICE_GRPC_UTIL_H_
#define ATP_SERVICE_GRPC_UTIL_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "atp/wire/status.h"
#include "google/protobuf/message_lite.h"
#include "token_check.h"

namespace atp::service {

// The bytes of a received message, as slices (holding references) and views of them.
struct ReceivedBytes {
  std::vector<grpc::Slice> slices;
  std::vector<absl::Span<const uint8_t>> pieces;
};

inline absl::Status ReadBuffer(grpc::ByteBuffer* buffer, ReceivedBytes* out) {
  out->slices.clear();
  out->pieces.clear();
  if (!buffer->Valid()) return absl::OkStatus();  // an empty message
  grpc::Status s = buffer->Dump(&out->slices);
  if (!s.ok())
    return absl::InvalidArgumentError(absl::StrCat("cannot read message: ", s.error_message()));
  out->pieces.reserve(out->slices.size());
  for (const grpc::Slice& slice : out->slices) {
    out->pieces.push_back(absl::MakeConstSpan(slice.begin(), slice.size()));
  }
  return absl::OkStatus();
}

// Parses a whole received buffer as `message`. INVALID_ARGUMENT naming `what` when it is not a
// valid encoding.
inline absl::Status ParseBuffer(const grpc::ByteBuffer& buffer,
                                google::protobuf::MessageLite* message, absl::string_view what) {
  grpc::ByteBuffer copy(buffer);  // shares the slices
  ReceivedBytes bytes;
  if (absl::Status s = ReadBuffer(&copy, &bytes); !s.ok()) return s;
  std::string flat;
  for (const auto& p : bytes.pieces) flat.append(reinterpret_cast<const char*>(p.data()), p.size());
  if (!message->ParseFromString(flat)) {
    return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ", what));
  }
  return absl::OkStatus();
}

inline grpc::ByteBuffer SerializeToBuffer(const google::protobuf::MessageLite& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

// OK when no token is required or the call's "authorization" metadata carries it.
inline absl::Status CheckCallToken(const TokenCheck* token,
                                   const grpc::CallbackServerContext* context) {
  if (token == nullptr) return absl::OkStatus();
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  std::optional<absl::string_view> value;
  if (it != md.end()) value = absl::string_view(it->second.data(), it->second.size());
  return token->Check(value);
}

}  // namespace atp::service

#endif  // ATP_SERVICE_GRPC_UTIL_H_
