#include "atp/wire/layer_digest.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace atp::wire {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  // Allocation failure of a few bytes is not an input error: treat it as fatal.
  if (ctx_ == nullptr ||
      EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
}

Sha256::~Sha256() {
  if (ctx_ != nullptr) EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

Sha256::Sha256(Sha256&& other) noexcept : ctx_(std::exchange(other.ctx_, nullptr)) {}

Sha256& Sha256::operator=(Sha256&& other) noexcept {
  if (this != &other) {
    if (ctx_ != nullptr) EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    ctx_ = std::exchange(other.ctx_, nullptr);
  }
  return *this;
}

void Sha256::Update(const void* data, size_t n) {
  if (n > 0) EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n);
}

std::array<uint8_t, 32> Sha256::Finish() {
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out.data(), &len);
  return out;
}

std::string HexString(absl::Span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0xF];
  }
  return out;
}

std::string Sha256Hex(const void* data, size_t n) {
  Sha256 sha;
  sha.Update(data, n);
  const auto digest = sha.Finish();
  return HexString(digest);
}

std::string AttentionDigestConfig(int64_t d_model, int64_t num_heads, int64_t num_kv_heads,
                                  int64_t head_dim, float scale, int key_scale) {
  const int64_t kv = num_kv_heads > 0 ? num_kv_heads : num_heads;
  const float s = scale > 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
  char scale_text[64];
  std::snprintf(scale_text, sizeof(scale_text), "%.9g", static_cast<double>(s));
  return absl::StrCat("attention:d_model=", d_model, ";num_heads=", num_heads, ";num_kv_heads=", kv,
                      ";head_dim=", head_dim, ";scale=", scale_text, ";key_scale=", key_scale);
}

std::string LayerDigest(absl::Span<const DigestTensor> tensors, absl::string_view config_text) {
  std::vector<const DigestTensor*> sorted;
  sorted.reserve(tensors.size());
  for (const DigestTensor& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const DigestTensor* a, const DigestTensor* b) { return a->name < b->name; });
  Sha256 sha;
  for (const DigestTensor* t : sorted) {
    sha.Update(t->name);
    const uint8_t meta[3] = {0, static_cast<uint8_t>(t->dtype),
                             static_cast<uint8_t>(t->shape.size())};
    sha.Update(meta, sizeof(meta));
    for (int64_t dim : t->shape) {
      uint8_t le[8];
      const auto u = static_cast<uint64_t>(dim);
      for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(u >> (8 * i));
      sha.Update(le, sizeof(le));
    }
    sha.Update(t->payload.data(), t->payload.size());
  }
  sha.Update(config_text);
  const auto digest = sha.Finish();
  return HexString(digest);
}

}  // namespace atp::wire
