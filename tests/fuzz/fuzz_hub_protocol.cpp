// libFuzzer: the hub's socket protocol decoder on arbitrary bytes, fed in
// pieces the first byte chooses. Never crashes, stays within its memory bound,
// and whatever decodes re-encodes to bytes that decode to the same encoding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "transport/framing/hub_protocol.hpp"

using namespace tollgate::transport::hub;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 97;
  const std::size_t cap = (data[0] & 0x80) ? kMaxHubMessage : kMaxNodeMessage;
  StreamDecoder decoder(cap);
  for (std::size_t at = 1; at < size; at += piece) {
    const std::size_t n = (size - at < piece) ? size - at : piece;
    decoder.feed({data + at, n});
    while (auto r = decoder.next()) {
      if (r->index() == 1) {
        if (decoder.failed()) break;
        continue;
      }
      const auto wire = encode(std::get<0>(*r));
      auto again = decode_body({wire.data() + 2, wire.size() - 2});
      if (again.index() != 0 || encode(std::get<0>(again)) != wire) std::abort();
    }
    if (decoder.buffered() > cap + 2 + piece) std::abort();
  }
  return 0;
}
