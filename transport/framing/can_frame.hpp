// A CAN or CAN FD frame as the framing code sees it: no sockets, no kernel structs.
#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace tollgate::transport {

struct CanFrame {
  std::uint32_t id = 0;        // 11-bit (standard) or 29-bit (extended) identifier
  bool extended = false;       // 29-bit identifier
  bool fd = false;             // CAN FD frame format
  bool brs = false;            // CAN FD bit rate switch (data phase at the data bit rate)
  std::uint8_t len = 0;        // data length: 0..8 classic; FD: 0..8,12,16,20,24,32,48,64
  std::array<std::uint8_t, 64> data{};

  std::span<const std::uint8_t> payload() const { return {data.data(), len}; }
};

// Valid CAN FD data lengths and the DLC mapping.
constexpr bool is_valid_fd_length(std::size_t n) {
  return n <= 8 || n == 12 || n == 16 || n == 20 || n == 24 || n == 32 || n == 48 || n == 64;
}
// Smallest valid FD length >= n (n <= 64).
constexpr std::uint8_t round_up_fd_length(std::size_t n) {
  constexpr std::uint8_t steps[] = {12, 16, 20, 24, 32, 48, 64};
  if (n <= 8) return static_cast<std::uint8_t>(n);
  for (auto s : steps)
    if (n <= s) return s;
  return 64;
}

}  // namespace tollgate::transport
