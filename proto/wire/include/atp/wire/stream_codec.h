// Direct encoding and decoding of the streamed messages that carry payload chunks, without copying
// the payload into a protobuf `bytes` field.
//
// ComputeRequest, ComputeResponse and RegisterLayerRequest share one shape on the wire:
//   oneof kind { <Header> header = 1; atp.v1.Chunk chunk = 2; }
// DecodeStreamMessage reads such a message from the pieces a transport received it in (for gRPC,
// the slices of a ByteBuffer) and returns the header's bytes (to parse with protobuf; headers are
// small) or the chunk's fields with its data as borrowed pieces, so that the payload is copied
// exactly once, into its destination. EncodeChunkPrefix writes the bytes that precede a chunk's
// data, so that a sender can send the data from its own buffer. Both follow the protobuf wire
// format exactly (unknown fields skipped, last value of a field wins), so any protobuf
// implementation is a peer. Thread-safe: pure functions.
#ifndef ATP_WIRE_STREAM_CODEC_H_
#define ATP_WIRE_STREAM_CODEC_H_

#include <cstdint>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/types/span.h"

namespace atp::wire {

using BytePieces = absl::Span<const absl::Span<const uint8_t>>;

struct DecodedChunk {
  uint64_t request_id = 0;
  uint32_t tensor_index = 0;
  uint64_t offset = 0;
  // The data, as pieces borrowed from the decoded input; `size` is their total.
  absl::InlinedVector<absl::Span<const uint8_t>, 4> data;
  uint64_t size = 0;
};

struct DecodedStreamMessage {
  enum class Kind {
    kEmpty,   // neither header nor chunk set
    kHeader,  // `header` holds the serialized header message
    kChunk,   // `chunk` is set
  };
  Kind kind = Kind::kEmpty;
  std::string header;
  DecodedChunk chunk;
};

// Decodes a message of the shape above from `pieces` (its bytes in order). INVALID_ARGUMENT when
// the bytes are not a valid protobuf encoding (truncated, malformed varint, group wire type, a
// length past the end). The header is returned unparsed.
absl::Status DecodeStreamMessage(BytePieces pieces, DecodedStreamMessage* out);

// The encoding of a message of the shape above whose `chunk` is {request_id, tensor_index, offset,
// data} up to and including the length prefix of `data`: the complete message is these bytes
// followed by the data_size payload bytes.
std::string EncodeChunkPrefix(uint64_t request_id, uint32_t tensor_index, uint64_t offset,
                              uint64_t data_size);

}  // namespace atp::wire

#endif  // ATP_WIRE_STREAM_CODEC_H_
