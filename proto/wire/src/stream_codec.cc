#include "atp/wire/stream_codec.h"

#include "absl/strings/str_cat.h"

namespace atp::wire {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

// A cursor over the pieces with a limit on how far it may read.
class Reader {
 public:
  explicit Reader(BytePieces pieces) : pieces_(pieces) {
    for (const auto& p : pieces) remaining_ += p.size();
    SkipEmpty();
  }

  uint64_t remaining() const { return remaining_; }

  bool ReadByte(uint8_t* b) {
    if (remaining_ == 0) return false;
    *b = pieces_[piece_][pos_];
    Advance(1);
    return true;
  }

  bool ReadVarint(uint64_t* value) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      if (shift == 63 && b > 1) return false;  // more than 64 bits
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        *value = v;
        return true;
      }
    }
    return false;
  }

  // Reads `n` bytes as borrowed pieces appended to `out`.
  template <typename Out>
  bool ReadPieces(uint64_t n, Out* out) {
    if (n > remaining_) return false;
    while (n > 0) {
      const auto& p = pieces_[piece_];
      const uint64_t take = std::min<uint64_t>(n, p.size() - pos_);
      if (out != nullptr) out->push_back(p.subspan(pos_, take));
      Advance(take);
      n -= take;
    }
    return true;
  }

  bool Skip(uint64_t n) {
    return ReadPieces<absl::InlinedVector<absl::Span<const uint8_t>, 4>>(n, nullptr);
  }

 private:
  void Advance(uint64_t n) {
    pos_ += n;
    remaining_ -= n;
    SkipEmpty();
  }
  void SkipEmpty() {
    while (piece_ < pieces_.size() && pos_ >= pieces_[piece_].size()) {
      ++piece_;
      pos_ = 0;
    }
  }

  BytePieces pieces_;
  size_t piece_ = 0;
  uint64_t pos_ = 0;
  uint64_t remaining_ = 0;
};

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("message is not a valid protobuf encoding: ", what));
}

// Skips a field of wire type `type` whose tag was just read.
bool SkipField(Reader* r, uint32_t type) {
  uint64_t v;
  switch (type) {
    case kVarint:
      return r->ReadVarint(&v);
    case kFixed64:
      return r->Skip(8);
    case kFixed32:
      return r->Skip(4);
    case kLen:
      return r->ReadVarint(&v) && r->Skip(v);
    default:
      return false;  // groups (3, 4) and reserved types are not used by these messages
  }
}

// Parses the fields of an atp.v1.Chunk occupying the next `len` bytes of `r`, merging into `c`.
absl::Status DecodeChunk(Reader* r, uint64_t len, DecodedChunk* c) {
  const uint64_t end = r->remaining() - len;
  while (r->remaining() > end) {
    uint64_t tag;
    if (!r->ReadVarint(&tag)) return Malformed("bad tag in chunk");
    const uint64_t field = tag >> 3;
    const uint32_t type = tag & 7;
    uint64_t v;
    if (field == 0) return Malformed("field number 0 in chunk");
    if (type == kVarint && (field == 1 || field == 2 || field == 3)) {
      if (!r->ReadVarint(&v)) return Malformed("bad varint in chunk");
      if (field == 1) c->request_id = v;
      if (field == 2) c->tensor_index = static_cast<uint32_t>(v);
      if (field == 3) c->offset = v;
    } else if (type == kLen && field == 4) {
      if (!r->ReadVarint(&v)) return Malformed("bad length of chunk data");
      if (v > r->remaining() - end) return Malformed("chunk data runs past its message");
      c->data.clear();  // the last occurrence of a field wins
      if (!r->ReadPieces(v, &c->data)) return Malformed("truncated chunk data");
      c->size = v;
    } else if (!SkipField(r, type)) {
      return Malformed("bad field in chunk");
    }
    if (r->remaining() < end) return Malformed("chunk field runs past its message");
  }
  return absl::OkStatus();
}

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

int VarintSize(uint64_t v) {
  int n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

}  // namespace

absl::Status DecodeStreamMessage(BytePieces pieces, DecodedStreamMessage* out) {
  *out = DecodedStreamMessage();
  Reader r(pieces);
  while (r.remaining() > 0) {
    uint64_t tag;
    if (!r.ReadVarint(&tag)) return Malformed("bad tag");
    const uint64_t field = tag >> 3;
    const uint32_t type = tag & 7;
    if (field == 0) return Malformed("field number 0");
    if (type == kLen && (field == 1 || field == 2)) {
      uint64_t len;
      if (!r.ReadVarint(&len) || len > r.remaining()) return Malformed("length past the end");
      if (field == 1) {
        // A oneof member that appears again merges; appending the bytes does exactly that.
        if (out->kind != DecodedStreamMessage::Kind::kHeader) out->header.clear();
        absl::InlinedVector<absl::Span<const uint8_t>, 4> parts;
        r.ReadPieces(len, &parts);
        for (const auto& p : parts)
          out->header.append(reinterpret_cast<const char*>(p.data()), p.size());
        out->kind = DecodedStreamMessage::Kind::kHeader;
        out->chunk = DecodedChunk();
      } else {
        if (out->kind != DecodedStreamMessage::Kind::kChunk) out->chunk = DecodedChunk();
        if (absl::Status s = DecodeChunk(&r, len, &out->chunk); !s.ok()) return s;
        out->kind = DecodedStreamMessage::Kind::kChunk;
        out->header.clear();
      }
    } else if (!SkipField(&r, type)) {
      return Malformed("bad field");
    }
  }
  return absl::OkStatus();
}

std::string EncodeChunkPrefix(uint64_t request_id, uint32_t tensor_index, uint64_t offset,
                              uint64_t data_size) {
  uint64_t inner = 0;
  if (request_id != 0) inner += 1 + VarintSize(request_id);
  if (tensor_index != 0) inner += 1 + VarintSize(tensor_index);
  if (offset != 0) inner += 1 + VarintSize(offset);
  if (data_size != 0) inner += 1 + VarintSize(data_size) + data_size;
  std::string out;
  out.reserve(32);
  out.push_back(static_cast<char>((2 << 3) | kLen));
  PutVarint(inner, &out);
  if (request_id != 0) {
    out.push_back(static_cast<char>((1 << 3) | kVarint));
    PutVarint(request_id, &out);
  }
  if (tensor_index != 0) {
    out.push_back(static_cast<char>((2 << 3) | kVarint));
    PutVarint(tensor_index, &out);
  }
  if (offset != 0) {
    out.push_back(static_cast<char>((3 << 3) | kVarint));
    PutVarint(offset, &out);
  }
  if (data_size != 0) {
    out.push_back(static_cast<char>((4 << 3) | kLen));
    PutVarint(data_size, &out);
  }
  return out;
}

}  // namespace atp::wire
