#include "transport/framing/cobs.hpp"

namespace tollgate::transport {

std::size_t cobs_encoded_size(std::span<const std::uint8_t> data) {
  CobsEncoder counter(std::span<std::uint8_t>{});
  counter.put(data);
  (void)counter.finish();
  return counter.size();
}

CobsEncoder::CobsEncoder(std::span<std::uint8_t> out) : out_(out) {
  // An empty input still encodes as one block (0x01), so the first one is open.
  code_pos_ = size_++;
  block_open_ = true;
}

void CobsEncoder::write(std::size_t at, std::uint8_t byte) {
  if (at < out_.size()) {
    out_[at] = byte;
  } else {
    overflow_ = true;
  }
}

void CobsEncoder::put(std::uint8_t byte) {
  if (!block_open_) {
    code_pos_ = size_++;
    code_ = 1;
    block_open_ = true;
  }
  if (byte == 0) {
    // A 0x00 closes the block; the data after it (or the virtual trailing 0x00)
    // needs a block of its own even if the input ends here.
    write(code_pos_, code_);
    code_pos_ = size_++;
    code_ = 1;
    return;
  }
  write(size_++, byte);
  if (++code_ == 0xFF) {
    write(code_pos_, code_);
    // Opened lazily so a 0xFF block that ends the input is not followed by an
    // empty 0x01 block.
    block_open_ = false;
  }
}

void CobsEncoder::put(std::span<const std::uint8_t> bytes) {
  for (std::uint8_t b : bytes) put(b);
}

SizeOrError CobsEncoder::finish() {
  if (block_open_) write(code_pos_, code_);
  block_open_ = false;
  if (overflow_) return LinkError::kTooLarge;
  return size_;
}

SizeOrError cobs_encode(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) {
  if (out.size() < cobs_encoded_size(in)) return LinkError::kTooLarge;
  CobsEncoder enc(out);
  enc.put(in);
  return enc.finish();
}

SizeOrError cobs_decode(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) {
  if (in.empty()) return LinkError::kMalformedFrame;
  std::size_t size = 0;
  std::size_t remaining = 0;  // data bytes still due in the current block
  bool zero_pending = false;  // the previous block (code < 0xFF) ends in a 0x00
  for (std::uint8_t b : in) {
    if (b == 0) return LinkError::kMalformedFrame;
    if (remaining == 0) {
      // A code byte. The previous block's 0x00 is written only now, because
      // after the last block it is the virtual one and must be dropped.
      if (zero_pending) {
        if (size == out.size()) return LinkError::kOverflow;
        out[size++] = 0;
      }
      remaining = b - 1U;
      zero_pending = b != 0xFF;
    } else {
      if (size == out.size()) return LinkError::kOverflow;
      out[size++] = b;
      --remaining;
    }
  }
  if (remaining != 0) return LinkError::kMalformedFrame;  // last code points past the end
  return size;
}

}  // namespace tollgate::transport
