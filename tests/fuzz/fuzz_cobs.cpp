// libFuzzer target for the serial framing (COBS + CRC-32C).
//  1. Arbitrary bytes into the frame decoder, one at a time and as a span: both
//     give the same outcomes, and those match an oracle built from the one-shot
//     cobs_decode on each stretch between zeros; nothing is written past the
//     decoder's buffer; every delivered payload is within the cap.
//  2. The input as a payload: encode -> decode gives it back exactly.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "transport/framing/cobs.hpp"
#include "transport/framing/crc32c.hpp"
#include "transport/framing/serial_framer.hpp"

namespace {

using namespace tollgate::transport;
using Bytes = std::vector<std::uint8_t>;

#define FUZZ_CHECK(cond)       \
  do {                         \
    if (!(cond)) std::abort(); \
  } while (0)

constexpr std::size_t kCap = 300;
constexpr std::size_t kSlack = 32;
constexpr std::uint8_t kCanary = 0xA5;

struct Event {
  bool frame;
  LinkError error;
  Bytes payload;
  bool operator==(const Event&) const = default;
};

void record(const SerialDecodeResult& r, std::vector<Event>& out) {
  if (r.has_frame()) {
    FUZZ_CHECK(r.payload().size() <= kCap);
    out.push_back({true, LinkError::kIo, Bytes(r.payload().begin(), r.payload().end())});
  } else if (r.has_error()) {
    out.push_back({false, r.error(), {}});
  }
}

std::vector<Event> oracle(std::span<const std::uint8_t> in) {
  std::vector<Event> out;
  Bytes decoded(kCap + kSerialCrcSize);
  std::size_t start = 0;
  for (std::size_t i = 0; i <= in.size(); ++i) {
    const bool delimiter = i < in.size() && in[i] == 0;
    if (!delimiter && i < in.size()) continue;
    const auto stretch = in.subspan(start, i - start);
    start = i + 1;
    if (stretch.empty()) continue;
    const SizeOrError r = cobs_decode(stretch, decoded);
    if (r.index() == 1) {
      // Overflow is reported as it happens; malformed only at the delimiter.
      if (std::get<1>(r) == LinkError::kOverflow || delimiter)
        out.push_back({false, std::get<1>(r), {}});
      continue;
    }
    if (!delimiter) continue;  // a frame still in progress at the end of input
    const std::size_t n = std::get<0>(r);
    if (n < kSerialCrcSize) {
      out.push_back({false, LinkError::kMalformedFrame, {}});
      continue;
    }
    const std::span<const std::uint8_t> payload(decoded.data(), n - kSerialCrcSize);
    const std::uint32_t crc = static_cast<std::uint32_t>(decoded[n - 4]) |
                              static_cast<std::uint32_t>(decoded[n - 3]) << 8 |
                              static_cast<std::uint32_t>(decoded[n - 2]) << 16 |
                              static_cast<std::uint32_t>(decoded[n - 1]) << 24;
    if (crc32c(payload) != crc) {
      out.push_back({false, LinkError::kBadCrc, {}});
    } else {
      out.push_back({true, LinkError::kIo, Bytes(payload.begin(), payload.end())});
    }
  }
  return out;
}

bool canary_intact(const Bytes& storage) {
  return std::all_of(storage.end() - static_cast<std::ptrdiff_t>(kSlack), storage.end(),
                     [](std::uint8_t b) { return b == kCanary; });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);

  // 1. Decoding arbitrary bytes.
  Bytes storage1(serial_decoder_buffer_size(kCap) + kSlack, kCanary);
  Bytes storage2 = storage1;
  SerialFrameDecoder by_byte(std::span(storage1.data(), storage1.size() - kSlack), kCap);
  SerialFrameDecoder by_span(std::span(storage2.data(), storage2.size() - kSlack), kCap);
  std::vector<Event> e1, e2;
  for (std::uint8_t b : in) record(by_byte.push(b), e1);
  for (auto rest = in; !rest.empty();) {
    const auto r = by_span.feed(rest);
    FUZZ_CHECK(r.consumed >= 1 && r.consumed <= rest.size());
    record(r.result, e2);
    rest = rest.subspan(r.consumed);
  }
  FUZZ_CHECK(e1 == e2);
  FUZZ_CHECK(e1 == oracle(in));
  FUZZ_CHECK(canary_intact(storage1) && canary_intact(storage2));

  // 2. Round trips with the input as the message.
  const auto payload = in.first(std::min(in.size(), kCap));
  for (bool lead : {false, true}) {
    const Bytes frame = encode_serial_frame(payload, lead);
    FUZZ_CHECK(frame.size() == serial_frame_size(payload, lead));
    FUZZ_CHECK(frame.size() <= serial_frame_max_size(payload.size(), lead));
    FUZZ_CHECK(std::count(frame.begin(), frame.end(), 0) == (lead ? 2 : 1));
    SerialFrameDecoder d(std::span(storage1.data(), storage1.size() - kSlack), kCap);
    std::vector<Event> ev;
    for (std::uint8_t b : frame) record(d.push(b), ev);
    FUZZ_CHECK(ev.size() == 1 && ev[0].frame);
    FUZZ_CHECK(
        std::equal(ev[0].payload.begin(), ev[0].payload.end(), payload.begin(), payload.end()));
  }
  Bytes encoded(cobs_max_encoded_size(in.size()));
  const SizeOrError n = cobs_encode(in, encoded);
  FUZZ_CHECK(n.index() == 0 && std::get<0>(n) == cobs_encoded_size(in));
  encoded.resize(std::get<0>(n));
  Bytes decoded(in.size());
  const SizeOrError m = cobs_decode(encoded, decoded);
  FUZZ_CHECK(m.index() == 0 && std::get<0>(m) == in.size());
  FUZZ_CHECK(std::equal(decoded.begin(), decoded.end(), in.begin(), in.end()));
  return 0;
}
