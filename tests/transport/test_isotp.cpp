// ISO-TP channel behaviour on simulated time: frame layouts, every timer and
// error path, STmin, addressing modes and identifier widths. The test plays the
// peer by hand (frames in, frames out) or runs two channels on test::Bus.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/transport/test_isotp_harness.hpp"

namespace tollgate::transport {
namespace {

using test::Bus;
using test::Fate;
using test::make_frame;
using test::Node;

constexpr std::uint32_t kA = 0x6A0;  // the channel under test sends on kA
constexpr std::uint32_t kB = 0x6A8;  // and receives on kB (the hand-played peer's id)

std::vector<IsoTpEvent> drain(IsoTpChannel& ch) {
  std::vector<IsoTpEvent> out;
  while (auto ev = ch.take_event()) out.push_back(std::move(*ev));
  return out;
}

bool is_error(const std::vector<IsoTpEvent>& evs, IsoTpEvent::Kind kind, LinkError e) {
  return evs.size() == 1 && evs[0].kind == kind && evs[0].error == e;
}

std::vector<std::uint8_t> bytes_of(const CanFrame& f) {
  return {f.data.begin(), f.data.begin() + f.len};
}

std::vector<std::uint8_t> seq(std::uint8_t from, std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(from + i);
  return v;
}

// A channel mid-reception of a 20-byte classic message: FF (bytes 1..6) taken,
// FC handed out and confirmed at t = 10. Next expected: CF SN 1 with bytes 7..13.
struct Receiving {
  explicit Receiving(IsoTpConfig cfg = test::classic_config(kA, kB)) : ch(cfg) {
    ch.on_frame(make_frame(kB, {0x10, 20, 1, 2, 3, 4, 5, 6}), 0);
    auto fc = ch.next_frame(0);
    REQUIRE(fc);
    ch.on_tx_confirmed(fc->ticket, 10);
    REQUIRE(drain(ch).empty());
    REQUIRE(ch.receiving());
  }
  // Feeds the two CFs that finish the message and returns what was delivered.
  std::vector<IsoTpEvent> finish(Micros now) {
    ch.on_frame(make_frame(kB, {0x21, 7, 8, 9, 10, 11, 12, 13}), now);
    ch.on_frame(make_frame(kB, {0x22, 14, 15, 16, 17, 18, 19, 20}), now);
    return drain(ch);
  }
  IsoTpChannel ch;
};

// A sender that has handed out and had confirmed its FF at t = 100 and waits
// for the flow control.
struct AwaitingFc {
  explicit AwaitingFc(std::size_t size = 34, IsoTpConfig cfg = test::classic_config(kA, kB))
      : ch(cfg), message(seq(1, size)) {
    REQUIRE_FALSE(ch.send(message, 0));
    auto ff = ch.next_frame(0);
    REQUIRE(ff);
    ch.on_tx_confirmed(ff->ticket, 100);
    REQUIRE(drain(ch).empty());
  }
  IsoTpChannel ch;
  std::vector<std::uint8_t> message;
};

// --- frame layouts ----------------------------------------------------------

TEST_CASE("a classic single frame carries up to 7 bytes, padded to 8 with the pad byte") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.pad_byte = 0xAA;
  IsoTpChannel ch(cfg);
  REQUIRE_FALSE(ch.send(seq(1, 3), 0));
  auto tx = ch.next_frame(0);
  REQUIRE(tx);
  CHECK(tx->frame.id == kA);
  CHECK_FALSE(tx->frame.fd);
  CHECK_FALSE(tx->frame.extended);
  CHECK(bytes_of(tx->frame) == std::vector<std::uint8_t>{0x03, 1, 2, 3, 0xAA, 0xAA, 0xAA, 0xAA});
  CHECK_FALSE(ch.next_frame(0));
  ch.on_tx_confirmed(tx->ticket, 5);
  CHECK(ch.take_event()->kind == IsoTpEvent::Kind::kSent);

  REQUIRE_FALSE(ch.send(seq(1, 7), 10));
  tx = ch.next_frame(10);
  CHECK(bytes_of(tx->frame) == std::vector<std::uint8_t>{0x07, 1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("without padding a classic frame is only as long as its content") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.padding = false;
  IsoTpChannel ch(cfg);
  REQUIRE_FALSE(ch.send(seq(1, 3), 0));
  auto sf = ch.next_frame(0);
  CHECK(bytes_of(sf->frame) == std::vector<std::uint8_t>{0x03, 1, 2, 3});
  ch.on_tx_confirmed(sf->ticket, 1);
  drain(ch);

  REQUIRE_FALSE(ch.send(seq(1, 8), 2));  // FF with 6 bytes, last CF with 2
  auto ff = ch.next_frame(2);
  CHECK(bytes_of(ff->frame) == std::vector<std::uint8_t>{0x10, 8, 1, 2, 3, 4, 5, 6});
  ch.on_tx_confirmed(ff->ticket, 3);
  ch.on_frame(make_frame(kB, {0x30, 0, 0}), 4);
  auto cf = ch.next_frame(4);
  CHECK(bytes_of(cf->frame) == std::vector<std::uint8_t>{0x21, 7, 8});
}

TEST_CASE("a CAN FD single frame over 7 bytes uses the escape and rounds up to a valid length") {
  IsoTpConfig cfg = test::fd_config(kA, kB);
  cfg.padding = false;
  cfg.pad_byte = 0x55;
  IsoTpChannel ch(cfg);
  auto send_one = [&](std::size_t n) {
    REQUIRE_FALSE(ch.send(seq(1, n), 0));
    auto tx = ch.next_frame(0);
    REQUIRE(tx);
    ch.on_tx_confirmed(tx->ticket, 0);
    drain(ch);
    return tx->frame;
  };
  CanFrame f = send_one(7);  // fits the classic layout
  CHECK(f.fd);
  CHECK(f.brs);
  CHECK(bytes_of(f) == std::vector<std::uint8_t>{0x07, 1, 2, 3, 4, 5, 6, 7});

  f = send_one(20);  // 2 + 20 = 22 bytes -> DLC 24, two round-up bytes
  REQUIRE(f.len == 24);
  CHECK(f.data[0] == 0x00);
  CHECK(f.data[1] == 20);
  CHECK(std::vector<std::uint8_t>(f.data.begin() + 2, f.data.begin() + 22) == seq(1, 20));
  CHECK(f.data[22] == 0x55);
  CHECK(f.data[23] == 0x55);

  f = send_one(62);  // the largest FD single frame
  CHECK(f.len == 64);
  CHECK(f.data[1] == 62);

  REQUIRE_FALSE(ch.send(seq(1, 63), 0));  // one more needs a first frame
  auto ff = ch.next_frame(0);
  CHECK(ff->frame.len == 64);
  CHECK(ff->frame.data[0] == 0x10);
  CHECK(ff->frame.data[1] == 63);
}

TEST_CASE("with padding a CAN FD frame is at least 8 bytes, then rounds up to a DLC") {
  IsoTpConfig cfg = test::fd_config(kA, kB);
  cfg.padding = true;
  IsoTpChannel ch(cfg);
  REQUIRE_FALSE(ch.send(seq(1, 2), 0));
  CHECK(ch.next_frame(0)->frame.len == 8);
  ch.abort_send();
  REQUIRE_FALSE(ch.send(seq(1, 9), 0));
  CHECK(ch.next_frame(0)->frame.len == 12);
}

TEST_CASE("the first frame length uses 12 bits up to 4095 and the 32-bit escape above") {
  {
    IsoTpChannel ch(test::classic_config(kA, kB));
    REQUIRE_FALSE(ch.send(seq(0, 4095), 0));
    CHECK(bytes_of(ch.next_frame(0)->frame) ==
          std::vector<std::uint8_t>{0x1F, 0xFF, 0, 1, 2, 3, 4, 5});
  }
  {
    IsoTpChannel ch(test::classic_config(kA, kB));
    REQUIRE_FALSE(ch.send(seq(0, 4096), 0));
    CHECK(bytes_of(ch.next_frame(0)->frame) ==
          std::vector<std::uint8_t>{0x10, 0x00, 0x00, 0x00, 0x10, 0x00, 0, 1});
  }
  {
    IsoTpChannel ch(test::fd_config(kA, kB));
    REQUIRE_FALSE(ch.send(seq(0, 70'000), 0));
    const CanFrame f = ch.next_frame(0)->frame;
    CHECK(f.len == 64);
    CHECK(std::vector<std::uint8_t>(f.data.begin(), f.data.begin() + 7) ==
          std::vector<std::uint8_t>{0x10, 0x00, 0x00, 0x01, 0x11, 0x70, 0});
    CHECK(f.data[63] == 57);  // 58 payload bytes
  }
}

TEST_CASE("flow control we send carries our BS and STmin, padded like our data") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.block_size = 8;
  cfg.st_min = 0xF3;
  IsoTpChannel ch(cfg);
  ch.on_frame(make_frame(kB, {0x10, 20, 1, 2, 3, 4, 5, 6}), 0);
  auto fc = ch.next_frame(0);
  REQUIRE(fc);
  CHECK(fc->frame.id == kA);
  CHECK(bytes_of(fc->frame) ==
        std::vector<std::uint8_t>{0x30, 8, 0xF3, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC});
}

TEST_CASE("sequence numbers wrap from 15 to 0") {
  const IsoTpConfig cfg = test::classic_config(kA, kB);
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  bus.record = true;
  const auto message = test::pattern(6 + 7 * 40);
  REQUIRE_FALSE(a.ch.send(message, 0));
  bus.run();
  REQUIRE(b.received.size() == 1);
  CHECK(b.received[0] == message);
  std::vector<std::uint8_t> pcis;
  for (const auto& r : bus.log)
    if (r.from_a && r.frame.data[0] >> 4 == 2) pcis.push_back(r.frame.data[0]);
  REQUIRE(pcis.size() == 40);
  for (std::size_t i = 0; i < pcis.size(); ++i) {
    CAPTURE(i);
    CHECK(pcis[i] == (0x20 | ((i + 1) & 0x0F)));
  }
  CHECK(pcis[14] == 0x2F);
  CHECK(pcis[15] == 0x20);
}

TEST_CASE("a message is reported sent only after its last frame is confirmed") {
  AwaitingFc s(10);
  s.ch.on_frame(make_frame(kB, {0x30, 0, 0}), 200);
  auto cf = s.ch.next_frame(200);
  REQUIRE(cf);
  CHECK(drain(s.ch).empty());
  CHECK(s.ch.sending());
  s.ch.on_tx_confirmed(cf->ticket, 300);
  auto evs = drain(s.ch);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].kind == IsoTpEvent::Kind::kSent);
  CHECK_FALSE(s.ch.sending());
  CHECK(s.ch.counters().messages_sent == 1);
}

// --- timers -------------------------------------------------------------------

TEST_CASE("N_As: a data frame not confirmed in time fails the send with kTimeoutAs") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.n_as_us = 1000;
  IsoTpChannel ch(cfg);
  REQUIRE_FALSE(ch.send(seq(1, 20), 500));
  auto ff = ch.next_frame(500);
  REQUIRE(ff);
  CHECK(ch.next_deadline() == 1500);
  ch.poll(1499);
  CHECK(drain(ch).empty());
  ch.poll(1500);
  CHECK(is_error(drain(ch), IsoTpEvent::Kind::kSendFailed, LinkError::kTimeoutAs));
  CHECK_FALSE(ch.sending());
  // The late confirmation belongs to a dead transfer.
  ch.on_tx_confirmed(ff->ticket, 1600);
  CHECK(drain(ch).empty());
  CHECK(ch.counters().stale_confirmations == 1);
  CHECK_FALSE(ch.next_deadline());
}

TEST_CASE("N_Ar: our flow control not confirmed in time drops the reception with kTimeoutAs") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.n_ar_us = 2000;
  IsoTpChannel ch(cfg);
  ch.on_frame(make_frame(kB, {0x10, 20, 1, 2, 3, 4, 5, 6}), 0);
  REQUIRE(ch.next_frame(100));
  CHECK(ch.next_deadline() == 2100);
  ch.poll(2099);
  CHECK(drain(ch).empty());
  ch.poll(2100);
  CHECK(is_error(drain(ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kTimeoutAs));
  CHECK_FALSE(ch.receiving());
  ch.on_frame(make_frame(kB, {0x21, 7, 8, 9, 10, 11, 12, 13}), 2200);
  CHECK(drain(ch).empty());
  CHECK(ch.counters().ignored_cf == 1);
}

TEST_CASE("N_Bs: no flow control after the first frame fails the send with kTimeoutBs") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.n_bs_us = 5000;
  AwaitingFc s(34, cfg);
  CHECK(s.ch.next_deadline() == 5100);  // N_Bs runs from the FF's confirmation
  s.ch.poll(5099);
  CHECK(drain(s.ch).empty());
  s.ch.poll(5100);
  CHECK(is_error(drain(s.ch), IsoTpEvent::Kind::kSendFailed, LinkError::kTimeoutBs));
  CHECK_FALSE(s.ch.sending());
}

TEST_CASE("N_Bs: no flow control after a block fails the send with kTimeoutBs") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.n_bs_us = 5000;
  AwaitingFc s(34, cfg);                             // FF + 4 CFs
  s.ch.on_frame(make_frame(kB, {0x30, 2, 0}), 200);  // BS 2
  for (Micros t : {300, 400}) {
    auto cf = s.ch.next_frame(t);
    REQUIRE(cf);
    s.ch.on_tx_confirmed(cf->ticket, t + 50);
  }
  CHECK_FALSE(s.ch.next_frame(500));  // block done: waits for the next FC
  CHECK(s.ch.next_deadline() == 450 + 5000);
  s.ch.poll(5450);
  CHECK(is_error(drain(s.ch), IsoTpEvent::Kind::kSendFailed, LinkError::kTimeoutBs));
}

TEST_CASE("each FC WAIT restarts N_Bs; WFTmax of them are tolerated, one more fails kWaitLimit") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.n_bs_us = 1000;
  cfg.wft_max = 2;
  SUBCASE("a CTS after WFTmax WAITs carries the message on") {
    AwaitingFc s(10, cfg);
    s.ch.on_frame(make_frame(kB, {0x31, 0, 0}), 900);
    CHECK(s.ch.next_deadline() == 1900);
    s.ch.on_frame(make_frame(kB, {0x31, 0, 0}), 1800);
    CHECK(s.ch.next_deadline() == 2800);
    s.ch.poll(2700);
    CHECK(drain(s.ch).empty());
    s.ch.on_frame(make_frame(kB, {0x30, 0, 0}), 2700);
    auto cf = s.ch.next_frame(2700);
    REQUIRE(cf);
    s.ch.on_tx_confirmed(cf->ticket, 2800);
    auto evs = drain(s.ch);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].kind == IsoTpEvent::Kind::kSent);
    CHECK(s.ch.counters().wait_frames == 2);
  }
  SUBCASE("one WAIT more than WFTmax fails the send") {
    AwaitingFc s(10, cfg);
    s.ch.on_frame(make_frame(kB, {0x31, 0, 0}), 200);
    s.ch.on_frame(make_frame(kB, {0x31, 0, 0}), 300);
    CHECK(drain(s.ch).empty());
    s.ch.on_frame(make_frame(kB, {0x31, 0, 0}), 400);
    CHECK(is_error(drain(s.ch), IsoTpEvent::Kind::kSendFailed, LinkError::kWaitLimit));
  }
  SUBCASE("with WFTmax 0 the first WAIT fails the send") {
    cfg.wft_max = 0;
    AwaitingFc s(10, cfg);
    s.ch.on_frame(make_frame(kB, {0x31, 0, 0}), 200);
    CHECK(is_error(drain(s.ch), IsoTpEvent::Kind::kSendFailed, LinkError::kWaitLimit));
  }
}

TEST_CASE("N_Cr: a missing consecutive frame drops the reception with kTimeoutCr") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.n_cr_us = 3000;
  Receiving r(cfg);
  CHECK(r.ch.next_deadline() == 3010);  // from our FC's confirmation
  r.ch.on_frame(make_frame(kB, {0x21, 7, 8, 9, 10, 11, 12, 13}), 2000);
  CHECK(drain(r.ch).empty());
  CHECK(r.ch.next_deadline() == 5000);  // restarted by the CF
  r.ch.poll(4999);
  CHECK(drain(r.ch).empty());
  r.ch.poll(5000);
  CHECK(is_error(drain(r.ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kTimeoutCr));
  CHECK_FALSE(r.ch.receiving());
  CHECK_FALSE(r.ch.next_deadline());
}

TEST_CASE("N_Cr on two channels: a sender that goes quiet times the receiver out") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.n_cr_us = 50'000;
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  std::size_t cfs = 0;
  bus.tap = [&](CanFrame& f, const Node& from) {
    if (&from == &a && f.data[0] >> 4 == 2 && ++cfs > 3) return Fate::kDrop;
    return Fate::kDeliver;
  };
  REQUIRE_FALSE(a.ch.send(test::pattern(100), 0));
  bus.run();
  CHECK(a.sent == 1);  // the sender cannot know
  CHECK(b.received.empty());
  CHECK(b.rx_errors == std::vector<LinkError>{LinkError::kTimeoutCr});
}

// --- error paths ------------------------------------------------------------------

TEST_CASE("a consecutive frame with the wrong sequence number drops the reception") {
  Receiving r;
  r.ch.on_frame(make_frame(kB, {0x22, 14, 15, 16, 17, 18, 19, 20}), 100);
  CHECK(is_error(drain(r.ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kWrongSequence));
  CHECK_FALSE(r.ch.receiving());
  r.ch.on_frame(make_frame(kB, {0x21, 7, 8, 9, 10, 11, 12, 13}), 200);
  CHECK(drain(r.ch).empty());
  CHECK(r.ch.counters().ignored_cf == 1);
}

TEST_CASE("a lost consecutive frame surfaces as a wrong sequence number, never a short message") {
  const IsoTpConfig cfg = test::classic_config(kA, kB);
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  std::size_t cfs = 0;
  bus.tap = [&](CanFrame& f, const Node& from) {
    return &from == &a && f.data[0] >> 4 == 2 && ++cfs == 3 ? Fate::kDrop : Fate::kDeliver;
  };
  REQUIRE_FALSE(a.ch.send(test::pattern(100), 0));
  bus.run();
  CHECK(b.received.empty());
  CHECK(b.rx_errors == std::vector<LinkError>{LinkError::kWrongSequence});
}

TEST_CASE("a first frame over the receive cap gets FC OVERFLOW and kOverflow, nothing buffered") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  SUBCASE("default cap of 64 KiB") {
    IsoTpChannel ch(cfg);
    ch.on_frame(make_frame(kB, {0x10, 0, 0x00, 0x01, 0x00, 0x00, 1, 2}), 0);  // exactly 64 KiB
    CHECK(drain(ch).empty());
    CHECK(ch.receiving());
    ch.abort_receive();
    ch.on_frame(make_frame(kB, {0x10, 0, 0x00, 0x01, 0x00, 0x01, 1, 2}), 0);  // one more
    CHECK(is_error(drain(ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kOverflow));
    CHECK_FALSE(ch.receiving());
    auto fc = ch.next_frame(0);
    REQUIRE(fc);
    CHECK(bytes_of(fc->frame) ==
          std::vector<std::uint8_t>{0x32, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC});
  }
  SUBCASE("the largest 32-bit length is refused without allocating") {
    IsoTpChannel ch(cfg);
    ch.on_frame(make_frame(kB, {0x10, 0, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2}), 0);
    CHECK(is_error(drain(ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kOverflow));
    REQUIRE(ch.next_frame(0));
  }
  SUBCASE("a configured cap") {
    cfg.max_rx_size = 100;
    IsoTpChannel ch(cfg);
    ch.on_frame(make_frame(kB, {0x10, 101, 1, 2, 3, 4, 5, 6}), 0);
    CHECK(is_error(drain(ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kOverflow));
    auto fc = ch.next_frame(0);
    REQUIRE(fc);
    CHECK(fc->frame.data[0] == 0x32);
    // An unconfirmed OVERFLOW is not reported a second time.
    ch.poll(10'000'000);
    CHECK(drain(ch).empty());
  }
}

TEST_CASE("overflow on both sides: the receiver refuses, the sender's send fails kOverflow") {
  IsoTpConfig cfg = test::fd_config(kA, kB);
  Node a(cfg);
  cfg = test::peer_of(cfg);
  cfg.max_rx_size = 1000;
  Node b(cfg);
  Bus bus(a, b);
  REQUIRE_FALSE(a.ch.send(test::pattern(1001), 0));
  bus.run();
  CHECK(a.tx_errors == std::vector<LinkError>{LinkError::kOverflow});
  CHECK(b.rx_errors == std::vector<LinkError>{LinkError::kOverflow});
  CHECK(b.received.empty());
  REQUIRE_FALSE(a.ch.send(test::pattern(1000), bus.now));  // the link carries on
  bus.run();
  CHECK(b.received.size() == 1);
}

TEST_CASE("a single frame during a reception aborts it with kUnexpectedFrame and is delivered") {
  Receiving r;
  r.ch.on_frame(make_frame(kB, {0x21, 7, 8, 9, 10, 11, 12, 13}), 100);
  r.ch.on_frame(make_frame(kB, {0x02, 0xAA, 0xBB}), 200);
  auto evs = drain(r.ch);
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].kind == IsoTpEvent::Kind::kReceiveFailed);
  CHECK(evs[0].error == LinkError::kUnexpectedFrame);
  CHECK(evs[1].kind == IsoTpEvent::Kind::kReceived);
  CHECK(evs[1].message == std::vector<std::uint8_t>{0xAA, 0xBB});
  CHECK_FALSE(r.ch.receiving());
}

TEST_CASE("a first frame during a reception restarts the reception with the new message") {
  Receiving r;
  r.ch.on_frame(make_frame(kB, {0x21, 7, 8, 9, 10, 11, 12, 13}), 100);
  r.ch.on_frame(make_frame(kB, {0x10, 10, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5}), 200);
  CHECK(is_error(drain(r.ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kUnexpectedFrame));
  CHECK(r.ch.receiving());
  auto fc = r.ch.next_frame(200);
  REQUIRE(fc);
  CHECK(fc->frame.data[0] == 0x30);
  r.ch.on_tx_confirmed(fc->ticket, 250);
  r.ch.on_frame(make_frame(kB, {0x21, 0xA6, 0xA7, 0xA8, 0xA9}), 300);
  auto evs = drain(r.ch);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].kind == IsoTpEvent::Kind::kReceived);
  CHECK(evs[0].message == seq(0xA0, 10));
}

TEST_CASE("a consecutive frame while idle and a flow control while not waiting are ignored") {
  IsoTpChannel ch(test::classic_config(kA, kB));
  ch.on_frame(make_frame(kB, {0x21, 1, 2, 3, 4, 5, 6, 7}), 0);
  ch.on_frame(make_frame(kB, {0x30, 0, 0}), 0);
  CHECK(drain(ch).empty());
  CHECK(ch.counters().ignored_cf == 1);
  CHECK(ch.counters().ignored_fc == 1);
  CHECK_FALSE(ch.next_frame(0));

  // While sending CFs (not waiting for an FC) another FC changes nothing.
  AwaitingFc s(34);
  s.ch.on_frame(make_frame(kB, {0x30, 0, 0}), 200);
  s.ch.on_frame(make_frame(kB, {0x32, 0, 0}), 210);  // would be OVERFLOW if it counted
  CHECK(drain(s.ch).empty());
  CHECK(s.ch.counters().ignored_fc == 1);
  CHECK(s.ch.next_frame(220));
}

struct BadFrame {
  const char* what;
  CanFrame frame;
};

CanFrame with_len(CanFrame f, std::uint8_t len, bool fd) {
  f.len = len;
  f.fd = fd;
  return f;
}

TEST_CASE("malformed classic frames are ignored with kMalformedFrame and a reception continues") {
  const std::vector<BadFrame> bad = {
      {"empty frame", make_frame(kB, {})},
      {"SF_DL 0 in a classic frame", make_frame(kB, {0x00, 1, 2, 3, 4, 5, 6, 7})},
      {"escape SF in a classic-length frame", make_frame(kB, {0x00, 5, 1, 2, 3, 4, 5, 0})},
      {"SF_DL 8 in a classic frame", make_frame(kB, {0x08, 1, 2, 3, 4, 5, 6, 7})},
      {"SF_DL beyond the frame", make_frame(kB, {0x05, 1, 2})},
      {"FF shorter than 8 bytes", make_frame(kB, {0x10, 10, 1, 2, 3})},
      {"FF_DL below FF_DLmin", make_frame(kB, {0x10, 7, 1, 2, 3, 4, 5, 6})},
      {"FF escape with FF_DL <= 4095", make_frame(kB, {0x10, 0, 0, 0, 0x0F, 0xFF, 1, 2})},
      {"short CF that is not the last", make_frame(kB, {0x21, 7, 8, 9})},
      {"CF longer than the FF's CAN_DL", with_len(make_frame(kB, {0x21, 7, 8, 9}), 12, true)},
      {"classic frame longer than 8", with_len(make_frame(kB, {0x02, 1, 2}), 12, false)},
      {"FD frame of an invalid length", with_len(make_frame(kB, {0x02, 1, 2}), 9, true)},
      {"PCI type 4", make_frame(kB, {0x40, 1, 2, 3, 4, 5, 6, 7})},
      {"PCI type 7", make_frame(kB, {0x7F, 1, 2, 3, 4, 5, 6, 7})},
      {"PCI type 15", make_frame(kB, {0xF0, 1, 2, 3, 4, 5, 6, 7})},
  };
  for (const auto& b : bad) {
    CAPTURE(std::string(b.what));
    Receiving r;
    r.ch.on_frame(b.frame, 50);
    CHECK(is_error(drain(r.ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kMalformedFrame));
    CHECK(r.ch.receiving());
    CHECK(r.ch.counters().malformed == 1);
    auto evs = r.finish(100);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].kind == IsoTpEvent::Kind::kReceived);
    CHECK(evs[0].message == seq(1, 20));
  }
}

TEST_CASE("CAN FD escape errors are ignored with kMalformedFrame") {
  auto fd_frame = [](std::initializer_list<std::uint8_t> head, std::uint8_t len) {
    return with_len(make_frame(kB, head, true), len, true);
  };
  const std::vector<BadFrame> bad = {
      {"CAN_DL > 8 without the SF escape", fd_frame({0x05, 1, 2, 3, 4, 5}, 12)},
      {"escaped SF_DL 0", fd_frame({0x00, 0x00, 1, 2}, 12)},
      {"escaped SF_DL beyond the frame", fd_frame({0x00, 11, 1, 2}, 12)},
      {"escaped SF_DL beyond a 64-byte frame", fd_frame({0x00, 63, 1, 2}, 64)},
      {"FF escape with FF_DL <= 4095", fd_frame({0x10, 0, 0, 0, 0x0F, 0xFF}, 64)},
      {"FF escape with FF_DL 0", fd_frame({0x10, 0, 0, 0, 0, 0}, 64)},
      {"FF_DL that fits an FD single frame", fd_frame({0x10, 62}, 64)},
  };
  for (const auto& b : bad) {
    CAPTURE(std::string(b.what));
    IsoTpChannel ch(test::fd_config(kA, kB));
    ch.on_frame(b.frame, 0);
    CHECK(is_error(drain(ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kMalformedFrame));
    CHECK_FALSE(ch.receiving());
    CHECK_FALSE(ch.next_frame(0));
  }
  // The boundary cases that are valid.
  IsoTpChannel ch(test::fd_config(kA, kB));
  ch.on_frame(fd_frame({0x00, 10}, 12), 0);
  auto evs = drain(ch);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].message.size() == 10);
  ch.on_frame(fd_frame({0x10, 63}, 64), 0);
  CHECK(drain(ch).empty());
  CHECK(ch.receiving());
}

TEST_CASE("an awaited flow control with a bad flow status or too short fails the send") {
  for (std::uint8_t fs = 3; fs <= 0xF; ++fs) {
    CAPTURE(int{fs});
    AwaitingFc s;
    s.ch.on_frame(make_frame(kB, {static_cast<std::uint8_t>(0x30 | fs), 0, 0}), 200);
    CHECK(is_error(drain(s.ch), IsoTpEvent::Kind::kSendFailed, LinkError::kMalformedFrame));
    CHECK_FALSE(s.ch.sending());
  }
  AwaitingFc s;
  s.ch.on_frame(make_frame(kB, {0x30, 0}), 200);
  CHECK(is_error(drain(s.ch), IsoTpEvent::Kind::kSendFailed, LinkError::kMalformedFrame));
}

TEST_CASE("a transmit failure fails the send, or drops the reception when it hit our FC") {
  SUBCASE("data frame") {
    AwaitingFc s(34);
    s.ch.on_frame(make_frame(kB, {0x30, 0, 0}), 200);
    auto cf = s.ch.next_frame(200);
    REQUIRE(cf);
    s.ch.on_tx_failed(cf->ticket, 250);
    CHECK(is_error(drain(s.ch), IsoTpEvent::Kind::kSendFailed, LinkError::kTransmitFailed));
    CHECK_FALSE(s.ch.sending());
    CHECK_FALSE(s.ch.next_frame(300));
  }
  SUBCASE("our flow control") {
    IsoTpChannel ch(test::classic_config(kA, kB));
    ch.on_frame(make_frame(kB, {0x10, 20, 1, 2, 3, 4, 5, 6}), 0);
    auto fc = ch.next_frame(0);
    REQUIRE(fc);
    ch.on_tx_failed(fc->ticket, 10);
    CHECK(is_error(drain(ch), IsoTpEvent::Kind::kReceiveFailed, LinkError::kTransmitFailed));
    CHECK_FALSE(ch.receiving());
  }
  SUBCASE("on two channels") {
    const IsoTpConfig cfg = test::classic_config(kA, kB);
    Node a(cfg);
    Node b(test::peer_of(cfg));
    Bus bus(a, b);
    std::size_t n = 0;
    bus.tap = [&](CanFrame&, const Node& from) {
      return &from == &a && ++n == 4 ? Fate::kFail : Fate::kDeliver;
    };
    REQUIRE_FALSE(a.ch.send(test::pattern(100), 0));
    bus.run();
    CHECK(a.tx_errors == std::vector<LinkError>{LinkError::kTransmitFailed});
    CHECK(b.rx_errors == std::vector<LinkError>{LinkError::kTimeoutCr});
  }
}

// --- STmin ------------------------------------------------------------------------

TEST_CASE("the sender spaces consecutive frames by the peer's STmin, reserved codes as 127 ms") {
  struct Case {
    std::uint8_t code;
    Micros gap;
  };
  const Case cases[] = {{0x00, 0},       {0x01, 1000},    {0x0A, 10'000}, {0x7F, 127'000},
                        {0xF1, 100},     {0xF5, 500},     {0xF9, 900},    {0x80, 127'000},
                        {0xF0, 127'000}, {0xFA, 127'000}, {0xFF, 127'000}};
  for (const auto& c : cases) {
    CAPTURE(int{c.code});
    AwaitingFc s(6 + 7 * 4);  // FF + 4 CFs
    s.ch.on_frame(make_frame(kB, {0x30, 0, c.code}), 200);
    Micros now = 200;
    Micros last_end = 0;
    std::vector<Micros> gaps;
    for (int i = 0; i < 4; ++i) {
      auto cf = s.ch.next_frame(now);
      if (!cf) {
        REQUIRE(s.ch.next_deadline());
        now = *s.ch.next_deadline();
        // Not a microsecond early.
        CHECK_FALSE(s.ch.next_frame(now - 1));
        cf = s.ch.next_frame(now);
      }
      REQUIRE(cf);
      if (i == 0) CHECK(now == 200);  // the first CF follows the FC at once
      if (i > 0) gaps.push_back(now - last_end);
      now += 50;  // airtime
      last_end = now;
      s.ch.on_tx_confirmed(cf->ticket, now);
    }
    for (Micros g : gaps) CHECK(g == c.gap);
    auto evs = drain(s.ch);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].kind == IsoTpEvent::Kind::kSent);
  }
}

TEST_CASE("STmin codes decode to microseconds") {
  CHECK(stmin_to_us(0x00) == 0);
  CHECK(stmin_to_us(0x7F) == 127'000);
  CHECK(stmin_to_us(0xF1) == 100);
  CHECK(stmin_to_us(0xF9) == 900);
  CHECK(stmin_to_us(0x80) == 127'000);
  CHECK(stmin_to_us(0xF0) == 127'000);
  CHECK(stmin_to_us(0xFA) == 127'000);
  CHECK(is_valid_stmin_code(0xF5));
  CHECK_FALSE(is_valid_stmin_code(0xF0));
  CHECK_FALSE(is_valid_stmin_code(0xFA));
}

TEST_CASE("the receiver's STmin on two channels spaces the frames on the simulated bus") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  Node a(cfg);
  cfg = test::peer_of(cfg);
  cfg.st_min = 0xF5;  // 500 us
  Node b(cfg);
  Bus bus(a, b);
  bus.record = true;
  REQUIRE_FALSE(a.ch.send(test::pattern(6 + 7 * 10), 0));
  bus.run();
  REQUIRE(b.received.size() == 1);
  std::vector<Micros> cf_at;
  for (const auto& r : bus.log)
    if (r.from_a && r.frame.data[0] >> 4 == 2) cf_at.push_back(r.at);
  REQUIRE(cf_at.size() == 10);
  for (std::size_t i = 1; i < cf_at.size(); ++i)
    CHECK(cf_at[i] - cf_at[i - 1] == bus.airtime_us + 500);
}

// --- window, races, misuse ---------------------------------------------------------

TEST_CASE("tx_window keeps several frames in flight when STmin is 0, one when it is not") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.tx_window = 4;
  {
    AwaitingFc s(6 + 7 * 10, cfg);
    s.ch.on_frame(make_frame(kB, {0x30, 0, 0}), 200);
    std::vector<IsoTpTxFrame> out;
    while (auto f = s.ch.next_frame(200)) out.push_back(*f);
    CHECK(out.size() == 4);
    s.ch.on_tx_confirmed(out[0].ticket, 300);
    CHECK(s.ch.next_frame(300));
    CHECK_FALSE(s.ch.next_frame(300));
  }
  {
    AwaitingFc s(6 + 7 * 10, cfg);
    s.ch.on_frame(make_frame(kB, {0x30, 0, 1}), 200);
    CHECK(s.ch.next_frame(200));
    CHECK_FALSE(s.ch.next_frame(200));
  }
}

TEST_CASE("a flow control that overtakes the first frame's confirmation is honoured") {
  IsoTpChannel ch(test::classic_config(kA, kB));
  REQUIRE_FALSE(ch.send(seq(1, 10), 0));
  auto ff = ch.next_frame(0);
  ch.on_frame(make_frame(kB, {0x30, 0, 0}), 50);
  ch.on_tx_confirmed(ff->ticket, 60);
  auto cf = ch.next_frame(60);
  REQUIRE(cf);
  ch.on_tx_confirmed(cf->ticket, 100);
  auto evs = drain(ch);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].kind == IsoTpEvent::Kind::kSent);
}

TEST_CASE("a second send while one is in progress is refused and the first completes") {
  const IsoTpConfig cfg = test::classic_config(kA, kB);
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  REQUIRE_FALSE(a.ch.send(test::pattern(50), 0));
  CHECK(a.ch.send(test::pattern(5), 0) == LinkError::kInvalidArgument);
  CHECK(a.ch.send({}, 0) == LinkError::kInvalidArgument);
  bus.run();
  REQUIRE(b.received.size() == 1);
  CHECK(b.received[0] == test::pattern(50));
}

TEST_CASE("an aborted send frees the channel and its late confirmations are ignored") {
  AwaitingFc s(34);
  s.ch.on_frame(make_frame(kB, {0x30, 0, 0}), 200);
  auto cf = s.ch.next_frame(200);
  s.ch.abort_send();
  CHECK_FALSE(s.ch.sending());
  CHECK_FALSE(s.ch.next_deadline());
  REQUIRE_FALSE(s.ch.send(seq(1, 3), 300));
  auto sf = s.ch.next_frame(300);
  s.ch.on_tx_confirmed(cf->ticket, 310);
  CHECK(drain(s.ch).empty());
  s.ch.on_tx_confirmed(sf->ticket, 320);
  auto evs = drain(s.ch);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].kind == IsoTpEvent::Kind::kSent);
}

TEST_CASE("sending and receiving run at the same time on one channel") {
  const IsoTpConfig cfg = test::classic_config(kA, kB);
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  REQUIRE_FALSE(a.ch.send(test::pattern(300, 1), 0));
  REQUIRE_FALSE(b.ch.send(test::pattern(200, 2), 0));
  bus.run();
  REQUIRE(a.received.size() == 1);
  REQUIRE(b.received.size() == 1);
  CHECK(b.received[0] == test::pattern(300, 1));
  CHECK(a.received[0] == test::pattern(200, 2));
}

// --- addressing, identifiers --------------------------------------------------------

TEST_CASE("extended addressing puts the target address first and ignores other addresses") {
  IsoTpConfig cfg = test::classic_config(kA, kB);
  cfg.addressing = IsoTpAddressing::kExtended;
  cfg.tx_address = 0x55;
  cfg.rx_address = 0x66;
  CHECK(isotp_single_frame_max(cfg) == 6);
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  bus.record = true;
  for (std::size_t n : {1, 6, 7, 100, 4096}) {
    CAPTURE(n);
    bus.log.clear();
    const auto msg = test::pattern(n);
    REQUIRE_FALSE(a.ch.send(msg, bus.now));
    bus.run();
    REQUIRE(b.received.size() == 1);
    CHECK(b.received[0] == msg);
    b.received.clear();
    std::size_t data = 0;
    std::size_t fcs = 0;
    for (const auto& r : bus.log) {
      CHECK(r.frame.data[0] == (r.from_a ? 0x55 : 0x66));
      ++(r.from_a ? data : fcs);
    }
    CHECK(data == frames_for(n, cfg).data_frames);
    CHECK(fcs == frames_for(n, cfg).flow_controls);
  }
  CHECK(frames_for(100, cfg).data_frames == 1 + (100 - 5 + 5) / 6);    // FF 5, CF 6 bytes
  CHECK(frames_for(4096, cfg).data_frames == 1 + (4096 - 1 + 5) / 6);  // escaped FF: 1 byte

  // A frame on our id for another target address is not ours.
  const auto before = b.ch.counters().frames_received;
  b.ch.on_frame(make_frame(kA, {0x77, 0x03, 1, 2, 3}), bus.now);
  CHECK_FALSE(b.ch.take_event());
  CHECK(b.ch.counters().frames_received == before);
  b.ch.on_frame(make_frame(kA, {0x55, 0x03, 1, 2, 3}), bus.now);
  auto ev = b.ch.take_event();
  REQUIRE(ev);
  CHECK(ev->message == std::vector<std::uint8_t>{1, 2, 3});
}

TEST_CASE("extended addressing on CAN FD escapes after the address byte") {
  IsoTpConfig cfg = test::fd_config(kA, kB);
  cfg.addressing = IsoTpAddressing::kExtended;
  cfg.tx_address = 0x01;
  cfg.rx_address = 0x02;
  CHECK(isotp_single_frame_max(cfg) == 61);
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  bus.record = true;
  for (std::size_t n : {6, 7, 61, 62, 4095, 4096, 10'000}) {
    CAPTURE(n);
    bus.log.clear();
    const auto msg = test::pattern(n);
    REQUIRE_FALSE(a.ch.send(msg, bus.now));
    bus.run();
    REQUIRE(b.received.size() == 1);
    CHECK(b.received[0] == msg);
    b.received.clear();
    const CanFrame& first = bus.log.front().frame;
    CHECK(first.data[0] == 0x01);
    if (n == 7) CHECK(first.data[1] == 0x00);  // escaped SF
    if (n == 7) CHECK(first.data[2] == 7);
    std::size_t data = 0;
    for (const auto& r : bus.log) data += r.from_a;
    CHECK(data == frames_for(n, cfg).data_frames);
  }
}

TEST_CASE("29-bit identifiers round-trip and an 11-bit frame with the same number is not ours") {
  IsoTpConfig cfg = test::classic_config(0x18DA00F1, 0x18DAF100);
  cfg.extended_id = true;
  REQUIRE_FALSE(validate_isotp_config(cfg));
  Node a(cfg);
  Node b(test::peer_of(cfg));
  Bus bus(a, b);
  bus.record = true;
  REQUIRE_FALSE(a.ch.send(test::pattern(300), 0));
  bus.run();
  REQUIRE(b.received.size() == 1);
  CHECK(b.received[0] == test::pattern(300));
  for (const auto& r : bus.log) {
    CHECK(r.frame.extended);
    CHECK(r.frame.id == (r.from_a ? 0x18DA00F1U : 0x18DAF100U));
  }
  CanFrame f = make_frame(0x18DAF100, {0x01, 0x42});
  CHECK_FALSE(a.ch.accepts(f));  // 11-bit frame
  f.extended = true;
  CHECK(a.ch.accepts(f));
  CanFrame short_id = make_frame(0x100, {0x01, 0x42});
  short_id.extended = true;
  CHECK_FALSE(a.ch.accepts(short_id));
}

TEST_CASE("every CAN FD TX_DL step carries messages in the minimum number of frames") {
  for (std::uint8_t dl : {8, 12, 16, 20, 24, 32, 48, 64}) {
    CAPTURE(int{dl});
    const IsoTpConfig cfg = test::fd_config(kA, kB, dl);
    REQUIRE_FALSE(validate_isotp_config(cfg));
    Node a(cfg);
    Node b(test::peer_of(cfg));
    Bus bus(a, b);
    for (std::size_t n = 1; n <= 300; ++n) {
      const auto before = bus.frames_from_a;
      REQUIRE_FALSE(a.ch.send(test::pattern(n), bus.now));
      bus.run();
      REQUIRE(b.received.size() == 1);
      CHECK(b.received[0] == test::pattern(n));
      b.received.clear();
      const std::size_t sf = dl == 8 ? 7 : dl - 2;
      const std::size_t want = n <= sf ? 1 : 1 + (n - (dl - 2) + dl - 2) / (dl - 1);
      CHECK(bus.frames_from_a - before == want);
    }
  }
}

TEST_CASE("frames_for matches the LIMITS.md figures") {
  const IsoTpConfig classic = test::classic_config(kA, kB);
  CHECK(frames_for(200, classic).total() == 30);
  CHECK(frames_for(1000, classic).total() == 144);
  CHECK(frames_for(3000, classic).total() == 430);
  CHECK(frames_for(0, classic).total() == 0);
  CHECK(frames_for(7, classic).total() == 1);
  CHECK(frames_for(8, classic).total() == 3);
  const IsoTpConfig fd = test::fd_config(kA, kB);
  CHECK(frames_for(62, fd).total() == 1);
  CHECK(frames_for(1000, fd).data_frames == 1 + 15);  // 62 + 15 * 63 >= 1000
  CHECK(frames_for(4096, fd).data_frames == 1 + 65);  // escaped FF carries 58
  IsoTpConfig bs8 = classic;
  bs8.block_size = 8;
  CHECK(frames_for(200, bs8).flow_controls == 4);  // 28 CFs -> FCs after FF, 8, 16, 24
}

TEST_CASE("invalid configurations are refused, and a channel built from one does nothing") {
  auto bad = [](auto mutate) {
    IsoTpConfig c = test::classic_config(kA, kB);
    mutate(c);
    return validate_isotp_config(c) == LinkError::kInvalidArgument;
  };
  CHECK_FALSE(validate_isotp_config(test::classic_config(kA, kB)));
  CHECK(bad([](IsoTpConfig& c) { c.tx_id = 0x800; }));
  CHECK(bad([](IsoTpConfig& c) { c.rx_id = 0x800; }));
  CHECK(bad([](IsoTpConfig& c) {
    c.extended_id = true;
    c.tx_id = 0x20000000;
  }));
  CHECK(bad([](IsoTpConfig& c) { c.tx_dl = 12; }));  // classic is 8
  CHECK(bad([](IsoTpConfig& c) {
    c.fd = true;
    c.tx_dl = 10;
  }));
  CHECK(bad([](IsoTpConfig& c) {
    c.fd = true;
    c.tx_dl = 7;
  }));
  CHECK(bad([](IsoTpConfig& c) { c.st_min = 0x80; }));
  CHECK(bad([](IsoTpConfig& c) { c.st_min = 0xFA; }));
  CHECK(bad([](IsoTpConfig& c) { c.tx_window = 0; }));
  CHECK(bad([](IsoTpConfig& c) { c.tx_window = kMaxTxWindow + 1; }));
  CHECK(bad([](IsoTpConfig& c) { c.max_rx_size = 0; }));
  CHECK(bad([](IsoTpConfig& c) { c.n_cr_us = 0; }));
  CHECK(bad([](IsoTpConfig& c) { c.addressing = static_cast<IsoTpAddressing>(7); }));

  IsoTpConfig c = test::classic_config(kA, kB);
  c.tx_dl = 12;
  IsoTpChannel ch(c);
  CHECK(ch.send(seq(1, 3), 0) == LinkError::kInvalidArgument);
  ch.on_frame(make_frame(kB, {0x02, 1, 2}), 0);
  CHECK_FALSE(ch.take_event());
  CHECK_FALSE(ch.accepts(make_frame(kB, {0x02, 1, 2})));
}

TEST_CASE("frames on other identifiers are not ours and change nothing") {
  Receiving r;
  r.ch.on_frame(make_frame(0x123, {0x22, 1, 2, 3, 4, 5, 6, 7}), 20);
  r.ch.on_frame(make_frame(kA, {0x02, 1, 2}), 20);  // our own tx id
  CHECK(drain(r.ch).empty());
  auto evs = r.finish(30);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].message == seq(1, 20));
}

}  // namespace
}  // namespace tollgate::transport
