// Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): rewrites a byte
// string so it contains no 0x00, which then serves as an unambiguous frame
// delimiter on a serial line. Pure functions, no allocation, no exceptions.
//
// Encoding: the input, with a virtual 0x00 appended, is cut after every 0x00
// and after every run of 254 non-zero bytes. Each piece is written as one code
// byte followed by its non-zero bytes: code 0x01..0xFE means "code - 1 data
// bytes, then a 0x00" (the last piece's 0x00 is the virtual one and is dropped),
// code 0xFF means "254 data bytes, no 0x00 follows". A 0xFF block that ends the
// input is not followed by an empty 0x01 block (the shorter form), so
//   encoded size = n + max(1, ceil(n / 254))   at most (input without zeros),
//   encoded size = n + 1                       at least.
// The decoder also accepts the longer form some encoders emit (a trailing 0x01
// after a final 0xFF block); both decode to the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <variant>

#include "transport/framing/link_error.hpp"

namespace tollgate::transport {

// A byte count or the reason there is none. The same type as
// LinkResult<std::size_t> (links/message_link.hpp), which framing/ cannot
// include because that header pulls in Asio.
using SizeOrError = std::variant<std::size_t, LinkError>;

// Largest COBS encoding of any n-byte input.
constexpr std::size_t cobs_max_encoded_size(std::size_t n) {
  return n + (n == 0 ? 1 : (n + 253) / 254);
}

// Exact size cobs_encode() will produce for `data`.
std::size_t cobs_encoded_size(std::span<const std::uint8_t> data);

// Incremental encoder, so a frame can be encoded from several pieces (payload,
// then its CRC) without first copying them together. Writes only inside `out`;
// once a byte does not fit, overflowed() is true and the output is unusable.
class CobsEncoder {
 public:
  explicit CobsEncoder(std::span<std::uint8_t> out);

  void put(std::uint8_t byte);
  void put(std::span<const std::uint8_t> bytes);
  // Closes the last block; returns the encoded size, or kTooLarge if `out` was
  // too small. No 0x00 delimiter is written: that is the framer's job.
  SizeOrError finish();
  bool overflowed() const { return overflow_; }
  // Size of the encoding so far (after finish(): in total), counted even when
  // `out` is too small, so an encoder over an empty span measures an encoding.
  std::size_t size() const { return size_; }

 private:
  void write(std::size_t at, std::uint8_t byte);

  std::span<std::uint8_t> out_;
  std::size_t size_ = 0;      // bytes produced so far (including the open block's code slot)
  std::size_t code_pos_ = 0;  // where the open block's code byte goes
  std::uint8_t code_ = 1;     // open block's code so far: 1 + its data bytes
  bool block_open_ = false;   // false right after a 0xFF block: the next byte opens one
  bool overflow_ = false;
};

// One-shot encode of `in` into `out`; kTooLarge if out.size() < cobs_encoded_size(in).
SizeOrError cobs_encode(std::span<const std::uint8_t> in, std::span<std::uint8_t> out);

// One-shot decode of one frame's bytes (without delimiters) into `out`.
// kMalformedFrame: `in` is empty, contains 0x00, or a code byte points past its
// end. kOverflow: the decoded bytes do not fit in `out` (nothing is written past
// out.size(); the contents of `out` are then unspecified).
SizeOrError cobs_decode(std::span<const std::uint8_t> in, std::span<std::uint8_t> out);

}  // namespace tollgate::transport
