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
std::string to_hex(ByteView b);
std::optional<Bytes> from_hex(std::string_view hex);  // nullopt on odd length or non-hex

// Constant-time comparison for secrets and MACs; false when sizes differ.
bool constant_time_equal(ByteView a, ByteView b);

// UUIDs travel as 16 raw bytes and are printed in the canonical 8-4-4-4-12 form.
std::string uuid_to_string(ByteView uuid16);
std::optional<Bytes> uuid_from_string(std::string_view text);

}  // namespace tollgate
