// libFuzzer: arbitrary frames, confirmations and time steps into one ISO-TP
// channel that is also sending. Never crashes; delivered messages stay within
// the receive cap (allocation happens only after the cap check); the next
// deadline is always in the future once the due work is done (a driver can
// never spin on a past timer).
//
// Input: byte 0 picks the configuration, then a stream of operations, each a
// header byte `op` followed by its operands:
//   op >> 6 == 0|1  a frame: id/ext/fd bits from op, then len, then len bytes
//   op >> 6 == 2    advance time by (op & 0x3F) * 53 us and poll
//   op >> 6 == 3    driver: take frames, confirm or fail one, or start a send
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <vector>

#include "transport/framing/byte_reader.hpp"
#include "transport/framing/isotp.hpp"

using namespace tollgate::transport;

namespace {

constexpr std::size_t kCap = 5000;  // above 4095, so the FF escape is reachable

void check(bool ok) {
  if (!ok) std::abort();
}

void drain(IsoTpChannel& ch) {
  while (auto ev = ch.take_event()) {
    if (ev->kind == IsoTpEvent::Kind::kReceived)
      check(!ev->message.empty() && ev->message.size() <= kCap);
    else
      check(ev->message.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ByteReader in({data, size});
  std::uint8_t mode = 0;
  if (!in.u8(mode)) return 0;

  IsoTpConfig c;
  c.tx_id = 0x6A0;
  c.rx_id = 0x6A8;
  c.fd = mode & 0x01;
  c.tx_dl = c.fd ? 64 : 8;
  c.padding = mode & 0x02;
  if (mode & 0x04) {
    c.addressing = IsoTpAddressing::kExtended;
    c.tx_address = 0x11;
    c.rx_address = 0x22;
  }
  c.block_size = static_cast<std::uint8_t>((mode >> 3) & 0x03);
  c.tx_window = static_cast<std::uint8_t>(1 + ((mode >> 5) & 0x03));
  c.extended_id = mode & 0x80;
  c.max_rx_size = kCap;
  c.wft_max = 3;
  c.n_as_us = c.n_ar_us = 2000;
  c.n_bs_us = c.n_cr_us = 5000;
  check(!validate_isotp_config(c));

  IsoTpChannel ch(c);
  const std::vector<std::uint8_t> message(700, 0x5A);
  std::deque<std::uint64_t> in_flight;
  Micros now = 0;
  (void)ch.send(message, now);

  std::uint8_t op = 0;
  while (in.u8(op)) {
    switch (op >> 6) {
      case 0:
      case 1: {
        CanFrame f;
        f.id = (op & 0x01) ? 0x6A8 : (op & 0x02) ? 0x6A0 : 0x123;
        f.extended = op & 0x04 ? !c.extended_id : c.extended_id;
        f.fd = op & 0x08;
        std::uint8_t len = 0;
        if (!in.u8(len)) return 0;
        f.len = len;  // deliberately unchecked: the channel must reject impossible lengths
        std::span<const std::uint8_t> bytes;
        if (!in.bytes(std::min<std::size_t>(len, f.data.size()), bytes)) bytes = in.rest();
        std::copy(bytes.begin(), bytes.end(), f.data.begin());
        if (!(op & 0x10) && c.addressing == IsoTpAddressing::kExtended) f.data[0] = c.rx_address;
        ch.on_frame(f, now);
        break;
      }
      case 2:
        now += Micros{op & 0x3FU} * 53;
        ch.poll(now);
        break;
      case 3:
        if ((op & 0x03) == 0) {
          (void)ch.send(std::span(message).first(1 + (op >> 2 & 0x0F) * 40), now);
        } else if (!in_flight.empty()) {
          const std::uint64_t t = in_flight.front();
          in_flight.pop_front();
          if ((op & 0x03) == 3)
            ch.on_tx_failed(t, now);
          else
            ch.on_tx_confirmed(t, now);
        }
        break;
    }
    while (auto tx = ch.next_frame(now)) {
      check(tx->frame.len <= 64 && (c.fd ? is_valid_fd_length(tx->frame.len) : tx->frame.len <= 8));
      in_flight.push_back(tx->ticket);
      if (in_flight.size() > 64) in_flight.pop_front();  // a frame the port never answers
    }
    drain(ch);
    if (auto d = ch.next_deadline()) check(*d > now);
  }
  return 0;
}
