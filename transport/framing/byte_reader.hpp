// A bounds-checked reader over untrusted bytes (after BoringSSL's CBS). Every
// getter returns false and leaves both the reader and its output untouched when
// fewer bytes remain than it needs, so a parser can never read past a frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace tollgate::transport {

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}

  std::size_t remaining() const { return bytes_.size(); }
  std::span<const std::uint8_t> rest() const { return bytes_; }

  [[nodiscard]] bool u8(std::uint8_t& out) {
    if (bytes_.empty()) return false;
    out = bytes_[0];
    bytes_ = bytes_.subspan(1);
    return true;
  }
  [[nodiscard]] bool u16be(std::uint16_t& out) {
    if (bytes_.size() < 2) return false;
    out = static_cast<std::uint16_t>((unsigned{bytes_[0]} << 8) | bytes_[1]);
    bytes_ = bytes_.subspan(2);
    return true;
  }
  [[nodiscard]] bool u32be(std::uint32_t& out) {
    if (bytes_.size() < 4) return false;
    out = (std::uint32_t{bytes_[0]} << 24) | (std::uint32_t{bytes_[1]} << 16) |
          (std::uint32_t{bytes_[2]} << 8) | std::uint32_t{bytes_[3]};
    bytes_ = bytes_.subspan(4);
    return true;
  }
  [[nodiscard]] bool bytes(std::size_t n, std::span<const std::uint8_t>& out) {
    if (bytes_.size() < n) return false;
    out = bytes_.first(n);
    bytes_ = bytes_.subspan(n);
    return true;
  }
  [[nodiscard]] bool skip(std::size_t n) {
    if (bytes_.size() < n) return false;
    bytes_ = bytes_.subspan(n);
    return true;
  }

 private:
  std::span<const std::uint8_t> bytes_;
};

}  // namespace tollgate::transport
