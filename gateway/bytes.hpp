// Byte buffers and a bounds-checked reader for untrusted input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
inline std::string_view as_chars(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
// Lowercase hex. from_hex accepts either case; nullopt on odd length or non-hex.
std::string to_hex(ByteView b);
std::optional<Bytes> from_hex(std::string_view hex);

// Constant-time comparison for secrets and MACs; false when sizes differ.
bool constant_time_equal(ByteView a, ByteView b);

// UUIDs travel as 16 raw bytes and are printed in the canonical 8-4-4-4-12 form
// (lowercase). uuid_to_string returns "" unless given exactly 16 bytes.
// uuid_from_string accepts only the 36-character 8-4-4-4-12 form (either case;
// no braces, no "urn:uuid:") and returns 16 bytes, or nullopt.
std::string uuid_to_string(ByteView uuid16);
std::optional<Bytes> uuid_from_string(std::string_view text);

}  // namespace tollgate
