#include "transport/framing/serial_framer.hpp"

#include <algorithm>
#include <array>
#include <limits>

#include "transport/framing/crc32c.hpp"

namespace tollgate::transport {
namespace {

using CrcBytes = std::array<std::uint8_t, kSerialCrcSize>;

CrcBytes crc_bytes(std::span<const std::uint8_t> payload) {
  const std::uint32_t crc = crc32c(payload);
  return {static_cast<std::uint8_t>(crc), static_cast<std::uint8_t>(crc >> 8),
          static_cast<std::uint8_t>(crc >> 16), static_cast<std::uint8_t>(crc >> 24)};
}

std::uint32_t load_le32(std::span<const std::uint8_t> b) {
  return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
         static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}

}  // namespace

std::size_t serial_frame_size(std::span<const std::uint8_t> payload, bool leading_delimiter) {
  CobsEncoder counter(std::span<std::uint8_t>{});
  counter.put(payload);
  counter.put(crc_bytes(payload));
  (void)counter.finish();
  return (leading_delimiter ? 1U : 0U) + counter.size() + 1U;
}

SizeOrError encode_serial_frame(std::span<const std::uint8_t> payload, std::span<std::uint8_t> out,
                                bool leading_delimiter) {
  std::size_t pos = 0;
  if (leading_delimiter) {
    if (out.empty()) return LinkError::kTooLarge;
    out[pos++] = 0;
  }
  CobsEncoder enc(out.subspan(pos));
  enc.put(payload);
  enc.put(crc_bytes(payload));
  const SizeOrError body = enc.finish();
  if (body.index() != 0) return LinkError::kTooLarge;
  pos += std::get<0>(body);
  if (pos >= out.size()) return LinkError::kTooLarge;  // no room for the delimiter
  out[pos++] = 0;
  return pos;
}

std::vector<std::uint8_t> encode_serial_frame(std::span<const std::uint8_t> payload,
                                              bool leading_delimiter) {
  std::vector<std::uint8_t> out(serial_frame_max_size(payload.size(), leading_delimiter));
  const SizeOrError n = encode_serial_frame(payload, out, leading_delimiter);
  // Cannot fail: the buffer has the worst-case size.
  out.resize(n.index() == 0 ? std::get<0>(n) : 0);
  return out;
}

SerialFrameDecoder::SerialFrameDecoder(std::span<std::uint8_t> buffer, std::size_t max_payload)
    : buffer_(buffer),
      limit_(max_payload > std::numeric_limits<std::size_t>::max() - kSerialCrcSize
                 ? buffer.size()
                 : std::min(buffer.size(), max_payload + kSerialCrcSize)) {}

void SerialFrameDecoder::reset() {
  size_ = 0;
  remaining_ = 0;
  zero_pending_ = false;
  in_frame_ = false;
  discarding_ = false;
}

SerialDecodeResult SerialFrameDecoder::push(std::uint8_t byte) {
  if (byte == 0) return end_of_frame();
  if (discarding_) return SerialDecodeResult::need_more();
  in_frame_ = true;

  bool has_output = true;
  std::uint8_t output = byte;
  if (remaining_ == 0) {
    // A code byte. The previous block's 0x00 is written only now: after the
    // last block it is COBS's virtual trailing zero and must not appear.
    has_output = zero_pending_;
    output = 0;
    remaining_ = byte - 1U;
    zero_pending_ = byte != 0xFF;
  } else {
    --remaining_;
  }
  if (has_output) {
    if (size_ == limit_) {
      // Reported now rather than at the delimiter, so endless data is noticed.
      discarding_ = true;
      return SerialDecodeResult::error(LinkError::kOverflow);
    }
    buffer_[size_++] = output;
  }
  return SerialDecodeResult::need_more();
}

SerialDecodeResult SerialFrameDecoder::end_of_frame() {
  const bool empty = !in_frame_;
  const bool discarded = discarding_;
  const bool truncated = remaining_ != 0;
  const std::size_t size = size_;
  reset();

  if (empty || discarded) return SerialDecodeResult::need_more();
  if (truncated || size < kSerialCrcSize)
    return SerialDecodeResult::error(LinkError::kMalformedFrame);
  const std::span<const std::uint8_t> decoded(buffer_.data(), size);
  const auto payload = decoded.first(size - kSerialCrcSize);
  if (crc32c(payload) != load_le32(decoded.last(kSerialCrcSize))) {
    return SerialDecodeResult::error(LinkError::kBadCrc);
  }
  return SerialDecodeResult::frame(payload);
}

SerialFrameDecoder::FeedResult SerialFrameDecoder::feed(std::span<const std::uint8_t> bytes) {
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    SerialDecodeResult r = push(bytes[i]);
    if (!r.needs_more()) return {i + 1, r};
  }
  return {bytes.size(), SerialDecodeResult::need_more()};
}

}  // namespace tollgate::transport
