// The round-trip sweep shared by test_isotp_roundtrip*.cpp (split so ctest can
// run the halves in parallel): every message size 1..4200 and 70 000 through two
// in-memory channels; the message arrives intact in the standard's minimum
// number of frames.
#pragma once

#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <string>

#include "tests/transport/test_isotp_harness.hpp"

namespace tollgate::transport {
namespace test {

// ISO 15765-2 minimum, written out independently of frames_for().
struct Expected {
  std::size_t data;
  std::size_t fc;
};
inline Expected standard_minimum(std::size_t n, bool fd, std::size_t bs) {
  const std::size_t sf = fd ? 62 : 7;
  if (n <= sf) return {1, 0};
  const std::size_t ff = fd ? (n > 4095 ? 58 : 62) : (n > 4095 ? 2 : 6);
  const std::size_t cf = fd ? 63 : 7;
  const std::size_t cfs = (n - ff + cf - 1) / cf;
  return {1 + cfs, bs == 0 ? 1 : (cfs + bs - 1) / bs};
}

// One configuration swept over every size. Plain comparisons on the hot path
// and one doctest assertion per failure keep it fast under ASan.
inline void sweep(bool fd, bool padding, std::uint8_t bs) {
  IsoTpConfig cfg = fd ? fd_config(0x6A0, 0x6A8) : classic_config(0x6A0, 0x6A8);
  cfg.padding = padding;
  cfg.block_size = bs;
  cfg.max_rx_size = 70'000;  // above the 64 KiB default, to carry the 70 000-byte message
  Node a(cfg);
  Node b(peer_of(cfg));
  Bus bus(a, b);
  bool lengths_ok = true;
  auto check_lengths = [&](CanFrame& f, const Node&) {
    const bool ok = fd ? (is_valid_fd_length(f.len) && f.fd && (!padding || f.len >= 8))
                       : (!f.fd && f.len <= 8 && (!padding || f.len == 8));
    lengths_ok = lengths_ok && ok;
    return Fate::kDeliver;
  };
  const auto data = pattern(70'000);

  CHECK(a.ch.send({}, bus.now) == LinkError::kInvalidArgument);  // ISO-TP has no empty message

  std::vector<std::size_t> sizes;
  for (std::size_t n = 1; n <= 4200; ++n) sizes.push_back(n);
  sizes.push_back(70'000);
  std::size_t failures = 0;
  for (std::size_t n : sizes) {
    // Frame lengths are checked around the size boundaries only: a tap on
    // every frame would double the run time under ASan.
    const bool edge = n <= 130 || (n >= 4090 && n <= 4100) || n == 70'000;
    bus.tap = edge ? std::function<Fate(CanFrame&, const Node&)>(check_lengths) : nullptr;
    const std::size_t before_a = bus.frames_from_a;
    const std::size_t before_b = bus.frames_from_b;
    if (a.ch.send(std::span(data).first(n), bus.now)) {
      FAIL_CHECK("send refused for size " << n);
      ++failures;
      continue;
    }
    bus.run();
    const Expected want = standard_minimum(n, fd, bs);
    const IsoTpFrameCount predicted = frames_for(n, cfg);
    const bool ok = a.sent == 1 && b.received.size() == 1 && b.received[0].size() == n &&
                    std::memcmp(b.received[0].data(), data.data(), n) == 0 && a.tx_errors.empty() &&
                    b.rx_errors.empty() && bus.frames_from_a - before_a == want.data &&
                    bus.frames_from_b - before_b == want.fc && predicted.data_frames == want.data &&
                    predicted.flow_controls == want.fc;
    if (!ok) {
      FAIL_CHECK("size " << n << ": sent " << a.sent << ", received " << b.received.size()
                         << ", data frames " << bus.frames_from_a - before_a << " (want "
                         << want.data << "), flow controls " << bus.frames_from_b - before_b
                         << " (want " << want.fc << "), frames_for " << predicted.data_frames << "+"
                         << predicted.flow_controls);
      if (++failures > 5) break;
    }
    a.sent = 0;
    b.received.clear();
    a.tx_errors.clear();
    b.rx_errors.clear();
  }
  CHECK(failures == 0);
  CHECK(lengths_ok);
  CHECK(a.ch.counters().messages_sent == sizes.size());
  CHECK(b.ch.counters().messages_received == sizes.size());
}

}  // namespace test
}  // namespace tollgate::transport
