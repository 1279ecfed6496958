#include "atp/wire/chunking.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "atp/wire/crc32c.h"

namespace atp::wire {

TensorAssembler::TensorAssembler(std::vector<Target> targets, uint64_t max_chunk_bytes)
    : targets_(std::move(targets)), max_chunk_bytes_(max_chunk_bytes) {}

absl::Status TensorAssembler::Add(uint32_t tensor_index, uint64_t offset,
                                  absl::Span<const absl::Span<const uint8_t>> pieces) {
  uint64_t size = 0;
  for (const auto& p : pieces) size += p.size();
  if (complete()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk for tensor ", tensor_index, " arrived after every input tensor was complete"));
  }
  Target& t = targets_[current_];
  if (tensor_index != current_) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk for tensor ", tensor_index, " arrived while tensor ", current_, " (",
                     t.name, ") has ", received_, " of ", t.buffer.size(),
                     " bytes (tensors are sent in order, each complete before the next)"));
  }
  if (max_chunk_bytes_ != 0 && size > max_chunk_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("chunk of ", t.name, " carries ", size,
                                                     " bytes, more than the chunk limit of ",
                                                     max_chunk_bytes_, " bytes"));
  }
  if (offset != received_) {
    return absl::InvalidArgumentError(absl::StrCat("chunk of ", t.name, " has offset ", offset,
                                                   ", want ", received_,
                                                   " (chunks are sent in order without gaps)"));
  }
  if (size > t.buffer.size() - received_) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk of ", t.name, " carries ", size, " bytes at offset ", offset,
                     ", past the end of its ", t.buffer.size(), " bytes"));
  }
  for (const auto& p : pieces) {
    if (p.empty()) continue;
    uint8_t* dst = t.buffer.data() + received_;
    std::memcpy(dst, p.data(), p.size());
    crc_ = Crc32cExtend(crc_, dst, p.size());  // the copy is hot in cache
    received_ += p.size();
  }
  total_received_ += size;
  if (received_ == t.buffer.size()) {
    if (crc_ != t.crc32c) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s has CRC-32C 0x%08x, but its header says 0x%08x", t.name, crc_, t.crc32c));
    }
    ++current_;
    received_ = 0;
    crc_ = 0;
  }
  return absl::OkStatus();
}

absl::Status TensorAssembler::MissingStatus() const {
  if (complete()) return absl::OkStatus();
  const Target& t = targets_[current_];
  return absl::InvalidArgumentError(
      absl::StrCat(t.name, " ended after ", received_, " of ", t.buffer.size(), " bytes"));
}

}  // namespace atp::wire
