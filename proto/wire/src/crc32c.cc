#include "atp/wire/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace atp::wire {
namespace {

constexpr uint32_t kPolyReflected = 0x82F63B78u;

// Slicing-by-8 tables: kTables[0] is the classic byte table; kTables[k][b] advances the byte b
// through k further zero bytes.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1u) ? kPolyReflected : 0u);
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  }
  return t;
}

constexpr Tables kTables = MakeTables();

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;  // little-endian hosts only (x86-64, aarch64)
}

// Raw register update (no pre/post inversion).
uint32_t UpdateSoftware(uint32_t c, const uint8_t* p, size_t n) {
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
    --n;
  }
  while (n >= 8) {
    const uint64_t v = Load64(p) ^ c;
    c = kTables[7][v & 0xFF] ^ kTables[6][(v >> 8) & 0xFF] ^ kTables[5][(v >> 16) & 0xFF] ^
        kTables[4][(v >> 24) & 0xFF] ^ kTables[3][(v >> 32) & 0xFF] ^ kTables[2][(v >> 40) & 0xFF] ^
        kTables[1][(v >> 48) & 0xFF] ^ kTables[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return c;
}

#if defined(__x86_64__)

// The hardware path splits long inputs into three blocks of kBlock bytes that are checksummed in
// parallel (the crc32 instruction has a latency of 3 cycles and a throughput of 1), then combines
// them: CRC(s, A‖B) = Shift(CRC(s, A), |B|) ^ CRC(0, B), where Shift advances a register through
// zero bytes. Shift by kBlock bytes is linear over GF(2), so four 256-entry tables apply it.
constexpr size_t kBlock = 4096;

struct ShiftTables {
  std::array<std::array<uint32_t, 256>, 4> t;
};

const ShiftTables& BlockShift() {
  static const ShiftTables* const tables = [] {
    auto* s = new ShiftTables();
    static const uint8_t kZeros[kBlock] = {};
    uint32_t basis[32];
    for (int bit = 0; bit < 32; ++bit) basis[bit] = UpdateSoftware(1u << bit, kZeros, kBlock);
    for (int j = 0; j < 4; ++j) {
      for (uint32_t b = 0; b < 256; ++b) {
        uint32_t v = 0;
        for (int i = 0; i < 8; ++i) {
          if ((b >> i) & 1u) v ^= basis[8 * j + i];
        }
        s->t[j][b] = v;
      }
    }
    return s;
  }();
  return *tables;
}

inline uint32_t ShiftBlock(const ShiftTables& s, uint32_t c) {
  return s.t[0][c & 0xFF] ^ s.t[1][(c >> 8) & 0xFF] ^ s.t[2][(c >> 16) & 0xFF] ^ s.t[3][c >> 24];
}

__attribute__((target("sse4.2"))) uint32_t UpdateHardware(uint32_t c32, const uint8_t* p,
                                                          size_t n) {
  uint64_t c = c32;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    --n;
  }
  if (n >= 3 * kBlock) {
    const ShiftTables& shift = BlockShift();
    do {
      uint64_t c0 = c, c1 = 0, c2 = 0;
      const uint8_t* p0 = p;
      const uint8_t* p1 = p + kBlock;
      const uint8_t* p2 = p + 2 * kBlock;
      for (size_t i = 0; i < kBlock; i += 8) {
        c0 = _mm_crc32_u64(c0, Load64(p0 + i));
        c1 = _mm_crc32_u64(c1, Load64(p1 + i));
        c2 = _mm_crc32_u64(c2, Load64(p2 + i));
      }
      uint32_t r = ShiftBlock(shift, static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1);
      c = ShiftBlock(shift, r) ^ static_cast<uint32_t>(c2);
      p += 3 * kBlock;
      n -= 3 * kBlock;
    } while (n >= 3 * kBlock);
  }
  while (n >= 8) {
    c = _mm_crc32_u64(c, Load64(p));
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return static_cast<uint32_t>(c);
}

bool HaveHardware() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}

#else

bool HaveHardware() { return false; }
uint32_t UpdateHardware(uint32_t c, const uint8_t* p, size_t n) { return UpdateSoftware(c, p, n); }

#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  const uint32_t c = ~crc;
  return ~(HaveHardware() ? UpdateHardware(c, p, n) : UpdateSoftware(c, p, n));
}

bool Crc32cIsHardware() { return HaveHardware(); }

namespace internal {
uint32_t Crc32cExtendSoftware(uint32_t crc, const void* data, size_t n) {
  return ~UpdateSoftware(~crc, static_cast<const uint8_t*>(data), n);
}
}  // namespace internal

}  // namespace atp::wire
