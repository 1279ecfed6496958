// Splitting tensor payloads into chunks and reassembling them with bounded memory.
//
// A payload travels as Chunk messages of at most the negotiated chunk size, in order and without
// gaps (atp.v1.Chunk). The sender walks it with ChunkSplitter; the receiver allocates each tensor
// once, from its already admitted header, and fills it with TensorAssembler, which checks the
// order, the bounds and the CRC-32C. Nothing else is buffered. Not thread-safe: one assembler per
// request.
#ifndef ATP_WIRE_CHUNKING_H_
#define ATP_WIRE_CHUNKING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace atp::wire {

// Walks the byte ranges [offset, offset + length) of a payload of `size` bytes in pieces of at most
// `chunk_bytes` (>= 1). A payload of 0 bytes has no pieces.
class ChunkSplitter {
 public:
  struct Piece {
    uint64_t offset = 0;
    uint64_t length = 0;
  };

  ChunkSplitter(uint64_t size, uint64_t chunk_bytes)
      : size_(size), chunk_bytes_(chunk_bytes == 0 ? 1 : chunk_bytes) {}

  bool done() const { return next_ >= size_; }
  // The next piece; only while !done().
  Piece Next() {
    Piece p{next_, size_ - next_ < chunk_bytes_ ? size_ - next_ : chunk_bytes_};
    next_ += p.length;
    return p;
  }
  // How many pieces the payload has in all.
  static uint64_t Count(uint64_t size, uint64_t chunk_bytes) {
    return chunk_bytes == 0 ? size : (size + chunk_bytes - 1) / chunk_bytes;
  }

 private:
  uint64_t size_;
  uint64_t chunk_bytes_;
  uint64_t next_ = 0;
};

// Fills the buffers of a fixed list of tensors from their chunks.
class TensorAssembler {
 public:
  // One tensor to fill: its destination (exactly byte_size bytes, owned by the caller and alive
  // while the assembler is used), the CRC-32C its header announced, and a name for messages.
  struct Target {
    std::string name;
    absl::Span<uint8_t> buffer;
    uint32_t crc32c = 0;
  };

  // max_chunk_bytes: the largest `data` of one chunk (0 = no limit).
  TensorAssembler(std::vector<Target> targets, uint64_t max_chunk_bytes);
  TensorAssembler(TensorAssembler&&) = default;
  TensorAssembler& operator=(TensorAssembler&&) = default;

  // Appends one chunk whose data is the concatenation of `pieces` (borrowed). Errors:
  //  - INVALID_ARGUMENT: tensor_index is not the tensor being received (tensors arrive in order,
  //    each complete before the next), offset is not the number of bytes received so far, the data
  //    runs past the tensor's size, a chunk arrives after every tensor is complete, or a tensor
  //    completes with a CRC-32C other than its header's;
  //  - RESOURCE_EXHAUSTED: the chunk is larger than max_chunk_bytes.
  // After an error the assembler must not be used further.
  absl::Status Add(uint32_t tensor_index, uint64_t offset,
                   absl::Span<const absl::Span<const uint8_t>> pieces);

  // Every tensor received and checked.
  bool complete() const { return current_ >= targets_.size(); }
  // Payload bytes accepted so far.
  uint64_t bytes_received() const { return total_received_; }
  // INVALID_ARGUMENT describing what is missing ("x ended after 1024 of 4096 bytes"); OK when
  // complete.
  absl::Status MissingStatus() const;

 private:
  std::vector<Target> targets_;
  uint64_t max_chunk_bytes_;
  size_t current_ = 0;     // index of the tensor being received
  uint64_t received_ = 0;  // bytes of targets_[current_] received
  uint32_t crc_ = 0;       // running CRC-32C of targets_[current_]
  uint64_t total_received_ = 0;
};

}  // namespace atp::wire

#endif  // ATP_WIRE_CHUNKING_H_
