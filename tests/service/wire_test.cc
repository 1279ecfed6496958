// Tests of atp_wire: CRC-32C, the layer digest, tensor header checks, chunking and the stream
// codec. No gRPC server here; these are the pieces both the worker and the client build on.
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "atp/v1/worker.pb.h"
#include "atp/wire/chunking.h"
#include "atp/wire/crc32c.h"
#include "atp/wire/layer_digest.h"
#include "atp/wire/status.h"
#include "atp/wire/stream_codec.h"
#include "atp/wire/tensor_header.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace atp::wire {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> RandomBytes(size_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

// Bit-at-a-time CRC-32C written from the definition: the oracle for both implementations.
uint32_t Crc32cBitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? 0x82F63B78u : 0u);
  }
  return ~c;
}

TEST(Crc32cTest, MatchesPublishedCheckValues) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  // RFC 3720 B.4: 32 bytes of zeros and 32 bytes of 0xFF.
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF);
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(Crc32cTest, HardwareAndSoftwareAgreeWithBitwiseOracleOnAwkwardLengthsAndAlignments) {
  std::mt19937_64 rng(1);
  const std::vector<uint8_t> buf = RandomBytes(3 * 4096 * 3 + 64, rng);
  const size_t lengths[] = {
      0, 1, 7, 8, 9, 63, 4095, 12288, 12289, 3 * 4096 * 2 + 17, 3 * 4096 * 3 + 5};
  for (size_t align = 0; align < 8; ++align) {
    for (size_t n : lengths) {
      const uint8_t* p = buf.data() + align;
      const uint32_t want = Crc32cBitwise(p, n);
      EXPECT_EQ(Crc32c(p, n), want) << "n=" << n << " align=" << align;
      EXPECT_EQ(internal::Crc32cExtendSoftware(0, p, n), want) << "n=" << n;
    }
  }
}

TEST(Crc32cTest, ExtendEqualsCrcOfConcatenation) {
  std::mt19937_64 rng(2);
  const std::vector<uint8_t> buf = RandomBytes(100000, rng);
  const uint32_t whole = Crc32c(buf.data(), buf.size());
  for (int trial = 0; trial < 20; ++trial) {
    const size_t cut = rng() % buf.size();
    uint32_t c = Crc32c(buf.data(), cut);
    c = Crc32cExtend(c, buf.data() + cut, buf.size() - cut);
    EXPECT_EQ(c, whole) << "cut=" << cut;
  }
}

TEST(LayerDigestTest, Sha256MatchesFipsVector) {
  EXPECT_EQ(Sha256Hex("abc", 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(LayerDigestTest, FollowsTheDefinitionAndIgnoresTensorOrder) {
  const std::vector<uint8_t> w = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<uint8_t> b = {9, 10, 11, 12};
  const std::vector<int64_t> w_shape = {2, 1};
  const std::vector<int64_t> b_shape = {1};
  const DigestTensor tw{"weight", atp::v1::DTYPE_F32, w_shape, w};
  const DigestTensor tb{"bias", atp::v1::DTYPE_F32, b_shape, b};
  // By hand: "bias" sorts before "weight".
  std::string text;
  text += "bias";
  text += std::string("\x00\x01\x01", 3);
  text += std::string("\x01\0\0\0\0\0\0\0", 8);
  text.append(b.begin(), b.end());
  text += "weight";
  text += std::string("\x00\x01\x02", 3);
  text += std::string("\x02\0\0\0\0\0\0\0", 8);
  text += std::string("\x01\0\0\0\0\0\0\0", 8);
  text.append(w.begin(), w.end());
  text += "linear";
  const std::string want = Sha256Hex(text.data(), text.size());
  const DigestTensor order1[] = {tw, tb};
  const DigestTensor order2[] = {tb, tw};
  EXPECT_EQ(LayerDigest(order1, kLinearDigestConfig), want);
  EXPECT_EQ(LayerDigest(order2, kLinearDigestConfig), want);
  EXPECT_NE(LayerDigest(order1, "attention:x"), want);
}

TEST(LayerDigestTest, AttentionConfigResolvesDefaults) {
  EXPECT_EQ(AttentionDigestConfig(64, 4, 0, 16, 0.0f, 1),
            "attention:d_model=64;num_heads=4;num_kv_heads=4;head_dim=16;scale=0.25;key_scale=1");
  EXPECT_EQ(AttentionDigestConfig(48, 4, 2, 12, 0.0f, 0),
            "attention:d_model=48;num_heads=4;num_kv_heads=2;head_dim=12;scale=0.288675129;"
            "key_scale=0");
}

TEST(TensorHeaderTest, AcceptsAConsistentHeader) {
  atp::v1::TensorHeader h;
  h.set_name("x");
  h.set_dtype(atp::v1::DTYPE_BF16);
  h.add_shape(3);
  h.add_shape(5);
  h.set_byte_size(30);
  h.set_crc32c(7);
  auto layout = CheckTensorHeader(h, 30, "x");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->byte_size, 30u);
  EXPECT_EQ(layout->shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(layout->crc32c, 7u);
}

TEST(TensorHeaderTest, RejectsEachKindOfBadHeaderWithASpecificMessage) {
  atp::v1::TensorHeader good;
  good.set_dtype(atp::v1::DTYPE_F32);
  good.add_shape(4);
  good.add_shape(2);
  good.set_byte_size(32);

  auto h = good;
  h.set_dtype(atp::v1::DTYPE_UNSPECIFIED);
  EXPECT_THAT(CheckTensorHeader(h, 0, "x").status().message(), HasSubstr("dtype"));
  h = good;
  h.set_shape(1, 0);
  EXPECT_THAT(CheckTensorHeader(h, 0, "x").status().message(), HasSubstr("[4,0]"));
  h = good;
  h.set_byte_size(31);
  EXPECT_THAT(CheckTensorHeader(h, 0, "x").status().message(), HasSubstr("byte_size 31, want 32"));
  h = good;
  h.set_shape(0, int64_t{1} << 40);
  h.set_shape(1, int64_t{1} << 40);
  EXPECT_THAT(CheckTensorHeader(h, 0, "x").status().message(), HasSubstr("overflows"));
  auto big = CheckTensorHeader(good, 31, "x");
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.status().message(), HasSubstr("limit of 31"));
}

TEST(ChunkSplitterTest, CoversThePayloadInOrder) {
  ChunkSplitter s(10, 4);
  std::vector<std::pair<uint64_t, uint64_t>> got;
  for (int i = 0; i < 10 && !s.done(); ++i) {
    auto p = s.Next();
    got.emplace_back(p.offset, p.length);
  }
  EXPECT_EQ(got, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 4}, {4, 4}, {8, 2}}));
  EXPECT_EQ(ChunkSplitter::Count(10, 4), 3u);
  EXPECT_TRUE(ChunkSplitter(0, 4).done());
}

struct AssemblerFixture {
  std::vector<uint8_t> a, b;          // what was sent
  std::vector<uint8_t> out_a, out_b;  // where it lands
  TensorAssembler assembler;

  static AssemblerFixture Make(size_t na, size_t nb, uint64_t max_chunk, std::mt19937_64& rng) {
    AssemblerFixture f{RandomBytes(na, rng), RandomBytes(nb, rng), {}, {}, {{}, 0}};
    f.out_a.assign(na, 0xEE);
    f.out_b.assign(nb, 0xEE);
    std::vector<TensorAssembler::Target> targets = {
        {"u", absl::MakeSpan(f.out_a), Crc32c(f.a.data(), na)},
        {"c", absl::MakeSpan(f.out_b), Crc32c(f.b.data(), nb)}};
    f.assembler = TensorAssembler(std::move(targets), max_chunk);
    return f;
  }
};

absl::Status AddChunk(TensorAssembler& asmb, uint32_t index, uint64_t offset,
                      const std::vector<uint8_t>& src, uint64_t len) {
  // Split the chunk's data into two pieces, as a transport might deliver it.
  const uint64_t half = len / 2;
  const absl::Span<const uint8_t> pieces[] = {
      absl::MakeConstSpan(src.data() + offset, half),
      absl::MakeConstSpan(src.data() + offset + half, len - half)};
  return asmb.Add(index, offset, pieces);
}

TEST(TensorAssemblerTest, ReassemblesTensorsSentInRandomChunkSizes) {
  std::mt19937_64 rng(3);
  auto f = AssemblerFixture::Make(1001, 37, 64, rng);
  for (uint32_t index = 0; index < 2; ++index) {
    const auto& src = index == 0 ? f.a : f.b;
    uint64_t offset = 0;
    for (int guard = 0; guard < 10000 && offset < src.size(); ++guard) {
      const uint64_t len = std::min<uint64_t>(1 + rng() % 64, src.size() - offset);
      ASSERT_TRUE(AddChunk(f.assembler, index, offset, src, len).ok());
      offset += len;
    }
  }
  EXPECT_TRUE(f.assembler.complete());
  EXPECT_TRUE(f.assembler.MissingStatus().ok());
  EXPECT_EQ(f.out_a, f.a);
  EXPECT_EQ(f.out_b, f.b);
  EXPECT_EQ(f.assembler.bytes_received(), 1038u);
}

TEST(TensorAssemblerTest, RejectsOutOfOrderGappedOverlongAndOversizeChunks) {
  std::mt19937_64 rng(4);
  {
    auto f = AssemblerFixture::Make(100, 10, 64, rng);
    auto s = AddChunk(f.assembler, 0, 10, f.a, 10);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("offset 10, want 0"));
  }
  {
    auto f = AssemblerFixture::Make(100, 10, 64, rng);
    auto s = AddChunk(f.assembler, 1, 0, f.b, 10);
    EXPECT_THAT(s.message(), HasSubstr("chunk for tensor 1 arrived while tensor 0 (u)"));
  }
  {
    auto f = AssemblerFixture::Make(100, 10, 64, rng);
    ASSERT_TRUE(AddChunk(f.assembler, 0, 0, f.a, 60).ok());
    std::vector<uint8_t> longer(f.a);
    longer.resize(200);
    auto s = AddChunk(f.assembler, 0, 60, longer, 50);
    EXPECT_THAT(s.message(), HasSubstr("past the end of its 100 bytes"));
  }
  {
    auto f = AssemblerFixture::Make(100, 10, 64, rng);
    auto s = AddChunk(f.assembler, 0, 0, f.a, 65);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  }
}

TEST(TensorAssemblerTest, DetectsACorruptedByteAndReportsTruncation) {
  std::mt19937_64 rng(5);
  auto f = AssemblerFixture::Make(100, 10, 0, rng);
  std::vector<uint8_t> corrupt = f.a;
  corrupt[57] ^= 0x10;
  auto s = AddChunk(f.assembler, 0, 0, corrupt, 100);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("u has CRC-32C"));

  auto g = AssemblerFixture::Make(100, 10, 0, rng);
  ASSERT_TRUE(AddChunk(g.assembler, 0, 0, g.a, 40).ok());
  EXPECT_FALSE(g.assembler.complete());
  EXPECT_THAT(g.assembler.MissingStatus().message(), HasSubstr("u ended after 40 of 100 bytes"));
}

// Splits `bytes` into random pieces and decodes them.
absl::Status DecodeSplit(const std::string& bytes, std::mt19937_64& rng,
                         DecodedStreamMessage* out) {
  std::vector<absl::Span<const uint8_t>> pieces;
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t at = 0;
  while (at < bytes.size()) {
    const size_t n = std::min<size_t>(bytes.size() - at, rng() % 7);
    pieces.push_back(absl::MakeConstSpan(p + at, n));
    at += n;
  }
  return DecodeStreamMessage(pieces, out);
}

std::string Concat(absl::Span<const absl::Span<const uint8_t>> pieces) {
  std::string s;
  for (const auto& p : pieces) s.append(reinterpret_cast<const char*>(p.data()), p.size());
  return s;
}

TEST(StreamCodecTest, DecodesProtobufEncodedChunksAndHeadersFromAnySplit) {
  std::mt19937_64 rng(6);
  for (int trial = 0; trial < 200; ++trial) {
    atp::v1::ComputeRequest msg;
    if (trial % 3 == 0) {
      msg.mutable_header()->set_request_id(rng());
      msg.mutable_header()->mutable_decompose()->mutable_rank()->set_fixed(3);
    } else {
      auto* c = msg.mutable_chunk();
      c->set_request_id(trial % 2 ? rng() : 0);
      c->set_tensor_index(static_cast<uint32_t>(rng() % 3));
      c->set_offset(rng() >> (rng() % 64));
      auto data = RandomBytes(rng() % 300, rng);
      c->set_data(std::string(data.begin(), data.end()));
    }
    const std::string bytes = msg.SerializeAsString();
    DecodedStreamMessage out;
    ASSERT_TRUE(DecodeSplit(bytes, rng, &out).ok());
    if (msg.has_header()) {
      ASSERT_EQ(out.kind, DecodedStreamMessage::Kind::kHeader);
      atp::v1::RequestHeader h;
      ASSERT_TRUE(h.ParseFromString(out.header));
      EXPECT_EQ(h.SerializeAsString(), msg.header().SerializeAsString());
    } else {
      ASSERT_EQ(out.kind, DecodedStreamMessage::Kind::kChunk);
      EXPECT_EQ(out.chunk.request_id, msg.chunk().request_id());
      EXPECT_EQ(out.chunk.tensor_index, msg.chunk().tensor_index());
      EXPECT_EQ(out.chunk.offset, msg.chunk().offset());
      EXPECT_EQ(out.chunk.size, msg.chunk().data().size());
      EXPECT_EQ(Concat(out.chunk.data), msg.chunk().data());
    }
  }
}

TEST(StreamCodecTest, EncodedPrefixPlusDataIsTheProtobufMessage) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const uint64_t id = trial % 5 == 0 ? 0 : rng();
    const uint32_t index = static_cast<uint32_t>(rng() % 4);
    const uint64_t offset = trial % 4 == 0 ? 0 : rng() >> 20;
    auto data = RandomBytes(trial == 0 ? 0 : rng() % 5000, rng);
    std::string bytes = EncodeChunkPrefix(id, index, offset, data.size());
    bytes.append(data.begin(), data.end());
    atp::v1::ComputeResponse msg;
    ASSERT_TRUE(msg.ParseFromString(bytes));
    ASSERT_TRUE(msg.has_chunk());
    EXPECT_EQ(msg.chunk().request_id(), id);
    EXPECT_EQ(msg.chunk().tensor_index(), index);
    EXPECT_EQ(msg.chunk().offset(), offset);
    EXPECT_EQ(msg.chunk().data(), std::string(data.begin(), data.end()));
    EXPECT_EQ(bytes, msg.SerializeAsString());
  }
}

TEST(StreamCodecTest, SkipsUnknownFieldsAndTheLastOneofMemberWins) {
  atp::v1::ComputeRequest first;
  first.mutable_header()->set_request_id(5);
  atp::v1::ComputeRequest second;
  second.mutable_chunk()->set_request_id(9);
  second.mutable_chunk()->set_data("xyz");
  // Unknown field 15 (varint) and 16 (fixed64) between the two.
  std::string bytes = first.SerializeAsString() + std::string("\x78\x05", 2) +
                      std::string("\x81\x01\1\2\3\4\5\6\7\x08", 10) + second.SerializeAsString();
  std::mt19937_64 rng(8);
  DecodedStreamMessage out;
  ASSERT_TRUE(DecodeSplit(bytes, rng, &out).ok());
  ASSERT_EQ(out.kind, DecodedStreamMessage::Kind::kChunk);
  EXPECT_EQ(out.chunk.request_id, 9u);
  EXPECT_EQ(Concat(out.chunk.data), "xyz");
}

TEST(StreamCodecTest, RejectsTruncatedAndMalformedBytesWithoutCrashing) {
  atp::v1::ComputeRequest msg;
  msg.mutable_chunk()->set_request_id(3);
  msg.mutable_chunk()->set_data(std::string(100, 'a'));
  const std::string bytes = msg.SerializeAsString();
  std::mt19937_64 rng(9);
  DecodedStreamMessage out;
  // Cut inside the data: the length prefix points past the end.
  auto s = DecodeSplit(bytes.substr(0, bytes.size() - 1), rng, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not a valid protobuf"));
  EXPECT_FALSE(
      DecodeSplit(std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11), rng, &out).ok());
  EXPECT_FALSE(DecodeSplit(std::string("\x0b", 1), rng, &out).ok());  // group wire type
  // Random garbage never crashes and never yields data beyond its input.
  for (int trial = 0; trial < 2000; ++trial) {
    auto g = RandomBytes(rng() % 64, rng);
    std::string text(g.begin(), g.end());
    if (DecodeSplit(text, rng, &out).ok() && out.kind == DecodedStreamMessage::Kind::kChunk) {
      EXPECT_LE(out.chunk.size, text.size());
    }
  }
}

TEST(StatusTest, RoundTripsCodesAndMessages) {
  const absl::Status s = absl::NotFoundError("layer \"a\" is not registered");
  const grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(FromGrpcStatus(g), s);
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_EQ(StatusFromCode(8, "full").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusFromCode(99, "what").code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(StatusCodeName(absl::StatusCode::kInvalidArgument), "INVALID_ARGUMENT");
}

}  // namespace
}  // namespace atp::wire
