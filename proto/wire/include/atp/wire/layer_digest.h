// The content digest of a layer, as defined at atp.v1.LayerHeader (worker.proto): a lowercase hex
// SHA-256 that identifies a layer's weights and configuration, so that registration is idempotent.
// Client and worker compute it with these functions. Thread-safe: Sha256 objects are not shared;
// the functions are pure.
#ifndef ATP_WIRE_LAYER_DIGEST_H_
#define ATP_WIRE_LAYER_DIGEST_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace atp::wire {

// Incremental SHA-256 (OpenSSL libcrypto). Move-only.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n);
  void Update(absl::string_view bytes) { Update(bytes.data(), bytes.size()); }
  // The digest of everything passed to Update. The object may not be used afterwards.
  std::array<uint8_t, 32> Finish();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

// Lowercase hex of `bytes`.
std::string HexString(absl::Span<const uint8_t> bytes);

// SHA-256 of `n` bytes, as lowercase hex.
std::string Sha256Hex(const void* data, size_t n);

// One tensor of a layer as the digest sees it. `payload` is borrowed.
struct DigestTensor {
  absl::string_view name;
  int dtype = 0;  // the atp.v1.DType number
  absl::Span<const int64_t> shape;
  absl::Span<const uint8_t> payload;
};

// The configuration text of an attention layer: "attention:d_model=…;num_heads=…;num_kv_heads=…;
// head_dim=…;scale=…;key_scale=…". num_kv_heads 0 is resolved to num_heads and scale 0 to
// 1/sqrt(head_dim) (computed in float, as the kernels do) before printing; the scale is printed
// with
// "%.9g". key_scale is the atp.v1.KeyScale number.
std::string AttentionDigestConfig(int64_t d_model, int64_t num_heads, int64_t num_kv_heads,
                                  int64_t head_dim, float scale, int key_scale);

// The configuration text of a linear layer.
inline constexpr absl::string_view kLinearDigestConfig = "linear";

// The layer digest: SHA-256 over the tensors sorted by name (each: name, 0x00, dtype byte, number
// of dimensions byte, each dimension as 8 bytes little-endian, payload), then `config_text`.
// Lowercase hex, 64 characters. The order of `tensors` does not matter.
std::string LayerDigest(absl::Span<const DigestTensor> tensors, absl::string_view config_text);

}  // namespace atp::wire

#endif  // ATP_WIRE_LAYER_DIGEST_H_
