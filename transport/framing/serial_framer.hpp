// Serial framing: how one message travels over a byte stream (UART, pty).
//
//   [0x00]  COBS( payload || CRC-32C(payload) as 4 bytes little-endian )  0x00
//   ^ optional leading delimiter                                        ^ delimiter
//
// The CRC (crc32c.hpp) catches line errors; COBS (cobs.hpp) guarantees 0x00
// appears only as the delimiter, so a receiver that lost sync finds the next
// frame boundary at the next 0x00. An empty frame (two delimiters in a row) is
// not a message: that is what makes the optional leading 0x00 free to send.
// Pure code: no I/O, no clock, no exceptions, no allocation in the decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "transport/framing/cobs.hpp"
#include "transport/framing/link_error.hpp"

namespace tollgate::transport {

inline constexpr std::size_t kSerialCrcSize = 4;
inline constexpr std::size_t kDefaultMaxSerialPayload = 64 * 1024;

// Largest frame on the wire for an n-byte payload (trailing delimiter included).
constexpr std::size_t serial_frame_max_size(std::size_t payload_size,
                                            bool leading_delimiter = false) {
  return (leading_delimiter ? 1U : 0U) + cobs_max_encoded_size(payload_size + kSerialCrcSize) + 1U;
}

// Decode buffer a SerialFrameDecoder needs to accept payloads up to max_payload.
constexpr std::size_t serial_decoder_buffer_size(std::size_t max_payload) {
  return max_payload + kSerialCrcSize;
}

// Exact size encode_serial_frame() produces for `payload`.
std::size_t serial_frame_size(std::span<const std::uint8_t> payload,
                              bool leading_delimiter = false);

// Writes one whole frame into `out`; returns its size, or kTooLarge if it does
// not fit (check with serial_frame_size / serial_frame_max_size). The encoder
// imposes no payload cap: the link enforces its configured maximum.
SizeOrError encode_serial_frame(std::span<const std::uint8_t> payload, std::span<std::uint8_t> out,
                                bool leading_delimiter = false);
// Convenience for tests and tools: the frame as a new vector.
std::vector<std::uint8_t> encode_serial_frame(std::span<const std::uint8_t> payload,
                                              bool leading_delimiter = false);

// What one step of the decoder produced.
class SerialDecodeResult {
 public:
  enum class Kind { kNeedMore, kFrame, kError };

  static SerialDecodeResult need_more() { return SerialDecodeResult(Kind::kNeedMore, {}, {}); }
  static SerialDecodeResult frame(std::span<const std::uint8_t> payload) {
    return SerialDecodeResult(Kind::kFrame, payload, {});
  }
  static SerialDecodeResult error(LinkError e) { return SerialDecodeResult(Kind::kError, {}, e); }

  Kind kind() const { return kind_; }
  bool needs_more() const { return kind_ == Kind::kNeedMore; }
  bool has_frame() const { return kind_ == Kind::kFrame; }
  bool has_error() const { return kind_ == Kind::kError; }
  // The payload (CRC removed); a view into the decoder's buffer, valid until
  // the next push()/feed()/reset(). Empty unless has_frame().
  std::span<const std::uint8_t> payload() const { return payload_; }
  // kBadCrc, kOverflow or kMalformedFrame. Meaningful only if has_error().
  LinkError error() const { return error_; }

 private:
  SerialDecodeResult(Kind k, std::span<const std::uint8_t> p, LinkError e)
      : kind_(k), payload_(p), error_(e) {}
  Kind kind_;
  std::span<const std::uint8_t> payload_;
  LinkError error_;
};

// Byte-at-a-time frame decoder into a caller-owned buffer.
//
// Each stretch of bytes between two delimiters yields exactly one outcome:
//   - a frame: the payload, CRC verified;
//   - kBadCrc: well-formed COBS, but the CRC-32C does not match;
//   - kMalformedFrame: invalid COBS (a code byte points past the delimiter) or
//     fewer decoded bytes than the 4-byte CRC;
//   - kOverflow: the payload exceeds the cap. Reported as soon as the cap is
//     passed (so an endless stream without delimiters is reported, not
//     buffered); the rest of the frame is then discarded up to the next 0x00.
//   - nothing, for an empty stretch (consecutive delimiters).
// After any outcome the decoder starts afresh at the next byte: one bad frame
// never costs the following good one. It never writes outside `buffer`, and
// never delivers a truncated payload.
class SerialFrameDecoder {
 public:
  // Payload cap = min(max_payload, buffer.size() - 4); a buffer of
  // serial_decoder_buffer_size(max_payload) bytes makes it max_payload.
  // The buffer must outlive the decoder.
  explicit SerialFrameDecoder(std::span<std::uint8_t> buffer,
                              std::size_t max_payload = kDefaultMaxSerialPayload);

  SerialDecodeResult push(std::uint8_t byte);

  struct FeedResult {
    std::size_t consumed;  // bytes of the input used; feed the rest next
    SerialDecodeResult result;
  };
  // Consumes bytes up to and including the first one that completes a frame or
  // an error, and stops there; consumed == bytes.size() with need_more if none.
  FeedResult feed(std::span<const std::uint8_t> bytes);

  // Forgets a partial frame, as if a delimiter had been seen (no outcome).
  void reset();

  std::size_t max_payload() const { return limit_ >= kSerialCrcSize ? limit_ - kSerialCrcSize : 0; }
  // True while bytes of a frame (or of an oversized frame being discarded) are pending.
  bool in_frame() const { return in_frame_; }

 private:
  SerialDecodeResult end_of_frame();

  std::span<std::uint8_t> buffer_;
  std::size_t limit_;          // decoded bytes (payload + CRC) allowed per frame
  std::size_t size_ = 0;       // decoded bytes so far
  std::size_t remaining_ = 0;  // data bytes still due in the current COBS block
  bool zero_pending_ = false;  // previous block (code < 0xFF) ends in a 0x00
  bool in_frame_ = false;      // bytes seen since the last delimiter
  bool discarding_ = false;    // overflow reported; dropping bytes until the delimiter
};

}  // namespace tollgate::transport
