// CRC-32C (Castagnoli): the checksum of every tensor payload on the wire (atp.v1.TensorHeader).
//
// Polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value and final XOR 0xFFFFFFFF, as in
// iSCSI, ext4 and RFC 3720: Crc32c("123456789") == 0xE3069283. Uses the SSE4.2 crc32 instruction
// (three interleaved streams) when the CPU has it and a table-driven software version otherwise;
// both give the same values. Thread-safe: pure functions.
#ifndef ATP_WIRE_CRC32C_H_
#define ATP_WIRE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace atp::wire {

// Extends `crc` (the CRC-32C of some bytes A, or 0 for none) to the CRC-32C of A followed by the
// `n` bytes at `data`. Crc32cExtend(Crc32cExtend(0, a, na), b, nb) == CRC of a‖b.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// The CRC-32C of `n` bytes at `data`.
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

// True when Crc32cExtend uses the SSE4.2 instruction on this machine.
bool Crc32cIsHardware();

namespace internal {
// The portable table-driven implementation (exposed so tests can compare both paths).
uint32_t Crc32cExtendSoftware(uint32_t crc, const void* data, size_t n);
}  // namespace internal

}  // namespace atp::wire

#endif  // ATP_WIRE_CRC32C_H_
