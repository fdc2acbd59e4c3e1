#include "gateway/bytes.hpp"

#include <openssl/crypto.h>

namespace tollgate {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Offsets of the dashes in the canonical 8-4-4-4-12 text form.
constexpr std::size_t kUuidTextSize = 36;
bool is_uuid_dash_position(std::size_t i) {
  return i == 8 || i == 13 || i == 18 || i == 23;
}

}  // namespace

std::string to_hex(ByteView b) {
  std::string out;
  out.reserve(b.size() * 2);
  for (std::uint8_t byte : b) {
    out.push_back(kHexDigits[byte >> 4]);
    out.push_back(kHexDigits[byte & 0x0f]);
  }
  return out;
}

std::optional<Bytes> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  Bytes out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = hex_value(hex[i]);
    const int lo = hex_value(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<std::uint8_t>((hi << 4) | lo));
  }
  return out;
}

bool constant_time_equal(ByteView a, ByteView b) {
  // Sizes are not secret (they are fixed by the algorithm); only contents are.
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string uuid_to_string(ByteView uuid16) {
  if (uuid16.size() != 16) return {};
  std::string out;
  out.reserve(kUuidTextSize);
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHexDigits[uuid16[i] >> 4]);
    out.push_back(kHexDigits[uuid16[i] & 0x0f]);
  }
  return out;
}

std::optional<Bytes> uuid_from_string(std::string_view text) {
  if (text.size() != kUuidTextSize) return std::nullopt;
  std::string digits;
  digits.reserve(32);
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (is_uuid_dash_position(i)) {
      if (text[i] != '-') return std::nullopt;
    } else {
      digits.push_back(text[i]);
    }
  }
  return from_hex(digits);
}

}  // namespace tollgate
