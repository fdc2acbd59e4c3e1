// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI and
// SCTP: crc32c("123456789") == 0xE3069283. Appended little-endian to every
// message by the serial framing and by the CAN message link.
#pragma once

#include <cstdint>
#include <span>

namespace tollgate::transport {

std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t crc = 0);

}  // namespace tollgate::transport
