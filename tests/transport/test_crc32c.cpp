#include <doctest/doctest.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "transport/framing/crc32c.hpp"

namespace {

using tollgate::transport::crc32c;

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST_CASE("crc32c of the standard check string is 0xE3069283") {
  CHECK(crc32c(bytes_of("123456789")) == 0xE3069283U);
}

TEST_CASE("crc32c of nothing is zero") {
  CHECK(crc32c({}) == 0U);
}

TEST_CASE("crc32c matches the RFC 3720 iSCSI test patterns") {
  // RFC 3720 B.4 lists the CRC as it appears on the wire (little-endian).
  std::vector<std::uint8_t> zeros(32, 0x00);
  std::vector<std::uint8_t> ones(32, 0xFF);
  std::vector<std::uint8_t> up(32);
  std::vector<std::uint8_t> down(32);
  for (std::size_t i = 0; i < 32; ++i) {
    up[i] = static_cast<std::uint8_t>(i);
    down[i] = static_cast<std::uint8_t>(31 - i);
  }
  CHECK(crc32c(zeros) == 0x8A9136AAU);
  CHECK(crc32c(ones) == 0x62A8AB43U);
  CHECK(crc32c(up) == 0x46DD794EU);
  CHECK(crc32c(down) == 0x113FDB5CU);
}

TEST_CASE("crc32c fed in pieces equals crc32c of the whole") {
  const auto all = bytes_of("The quick brown fox jumps over the lazy dog");
  for (std::size_t cut = 0; cut <= all.size(); ++cut) {
    CHECK(crc32c(all.subspan(cut), crc32c(all.first(cut))) == crc32c(all));
  }
}
